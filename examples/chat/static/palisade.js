// palisade.js: a small client for palisade-json's envelope (wire format v1, subprotocol
// `palisade.json.v1`), for browsers and Node. A plain ES module with no dependency and no
// build step; in Node 20, which has no global WebSocket, pass the `ws` package's class as
// the `WebSocket` option.
//
// What it does, and the rules of the book's "JSON messages" chapter it follows:
// - requests carry ids counted up from 0 and never reused; each waits for its reply under a
//   timeout; an error reply rejects it with a `ReplyError` carrying the reply's `code`,
//   `message`, `path` and `details`;
// - error replies that answer no request (`"reply": null`) go to `onRefusal`;
// - the server's events go to the handlers given to `on`, its requests to those given to
//   `handle` (a handler's return value is the ok reply, a thrown `ReplyError` the error reply);
// - errors are never answered with errors;
// - after a close, it reconnects with exponential backoff and jitter when the close code says
//   that trying again can help (`retryable`), and never after 1000, 1008, 4001 or 4003;
// - it speaks palisade-rooms' join and leave (`join`, `leave`): it keeps each room's position
//   (the epoch and offset of the join reply's `recovery`, advanced by every `room.message`)
//   and passes it as `recover` when it joins again after a reconnection, so that the reply
//   hands over exactly what was missed; `onOpen` lists the rooms to join again;
// - given the server's protocol description (`Protocol.fetch('/protocol.json')`, which
//   `#[palisade::protocol]` generates), it sends only the requests and events the protocol
//   declares and listens only for its pushes: a mistyped tag fails at once, in the caller,
//   instead of as the server's `unknown_event` later.

// ANCHOR: constants
/** The subprotocol that names wire format v1. */
export const SUBPROTOCOL = 'palisade.json.v1';

/** The largest request id: 2^53 - 1, the largest integer a JavaScript number holds exactly. */
export const MAX_ID = Number.MAX_SAFE_INTEGER;

/**
 * Close codes after which a new connection may succeed: going away (a restart), no status, an
 * abnormal end (the network, a killed server), an internal error, a service restart, try
 * again later, a bad gateway. Every other code, 1000 (the server ended the session, such as
 * an inactivity timeout), 1008 (a policy violation, such as a flood) and the application's
 * 4001 (not authenticated) and 4003 (forbidden) among them, would only be refused again.
 */
export const RETRYABLE_CLOSE_CODES = Object.freeze([1001, 1005, 1006, 1011, 1012, 1013, 1014]);
// ANCHOR_END: constants

/** Whether a connection closed with `code` is worth opening again. */
export function retryable(code) {
  return RETRYABLE_CLOSE_CODES.includes(code);
}

// ANCHOR: backoff
/**
 * The delay before reconnection attempt `attempt` (0 for the first): exponential from
 * `base` up to `max` milliseconds, then "equal jitter" (a random point in the upper half), so
 * that the clients a restart disconnected at once do not all come back at the same moment.
 */
export function backoffDelay(attempt, { base = 250, max = 10000 } = {}, random = Math.random) {
  const ceiling = Math.min(max, base * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}
// ANCHOR_END: backoff

/** An error reply to one of our requests: the peer refused it and the connection goes on. */
export class ReplyError extends Error {
  constructor(error, reply = null) {
    super(typeof error?.message === 'string' ? error.message : 'error reply');
    this.name = 'ReplyError';
    /** The stable error code (`invalid_payload`, `rate_limited`, …). */
    this.code = typeof error?.code === 'string' ? error.code : 'invalid_envelope';
    /** The offending field (`data.text`), or null. */
    this.path = typeof error?.path === 'string' ? error.path : null;
    /** Data for programs, or null. */
    this.details = error?.details ?? null;
    /** The id of the request answered, or null for a refusal of a message without one. */
    this.reply = reply;
  }
}

/** A request that had no reply before its deadline. */
export class TimeoutError extends Error {
  constructor(event, ms) {
    super(`no reply to ${event} within ${ms} ms`);
    this.name = 'TimeoutError';
    this.code = 'timeout';
  }
}

/** A message that the server's protocol description does not declare (nothing was sent). */
export class ProtocolError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ProtocolError';
    this.code = 'not_in_protocol';
  }
}

// ANCHOR: protocol
/**
 * A protocol's description, as a palisade server serves it: `{name, subprotocol, messages}`,
 * each message `{tag, kind, doc?, payload, reply?, validated, errors}` where `kind` is
 * `request`, `event` (client to server) or `push` (server to client), `payload` and `reply`
 * are JSON Schemas, and `errors` lists the error replies (`{kind: 'reply', code, message}`)
 * and closes (`{kind: 'close', code, reason}`) the message may end with.
 */
export class Protocol {
  constructor(description) {
    if (!Array.isArray(description?.messages)) throw new TypeError('not a protocol description');
    this.name = description.name;
    this.subprotocol = description.subprotocol ?? SUBPROTOCOL;
    this.messages = new Map();
    for (const message of description.messages) {
      this.messages.set(`${message.kind} ${message.tag}`, message);
    }
  }

  /** Fetches and reads the description at `url` (a palisade server's `/protocol.json`). */
  static async fetch(url, fetchImpl = globalThis.fetch) {
    const response = await fetchImpl(url, { headers: { accept: 'application/json' } });
    if (!response.ok) throw new Error(`${url}: ${response.status}`);
    return new Protocol(await response.json());
  }

  /** The message `tag` of `kind` (`request`, `event`, `push`), or undefined. */
  message(kind, tag) {
    return this.messages.get(`${kind} ${tag}`);
  }

  /** The client may send `tag` as a request: a request, or an event (acknowledged with null). */
  requestable(tag) {
    return this.message('request', tag) !== undefined || this.message('event', tag) !== undefined;
  }

  /** The codes of the error replies `tag` may get (besides the envelope's own, such as
   * `validation_failed` for a validated payload). */
  errorCodes(tag) {
    const message = this.message('request', tag) ?? this.message('event', tag);
    return (message?.errors ?? []).filter((e) => e.kind === 'reply').map((e) => e.code);
  }
}
// ANCHOR_END: protocol

/** The connection is not open, or closed before the reply came. */
export class ClosedError extends Error {
  constructor(code, reason) {
    super(reason ? `connection closed (${code} ${reason})` : `connection closed (${code})`);
    this.name = 'ClosedError';
    this.code = 'closed';
    this.closeCode = code;
    this.closeReason = reason;
  }
}

const NO_CLOSE = 1006;

/** The room protocol's event that carries a room's publications. */
const ROOM_MESSAGE = 'room.message';

/**
 * A connection to a palisade-json endpoint that reconnects by itself.
 *
 * `url` is a string, or a function returning one (called before each attempt, so that it can
 * carry a fresh token). Options:
 * - `WebSocket`: the WebSocket class (default: the global one);
 * - `protocols`: subprotocols offered besides `palisade.json.v1` (first), as an array or a
 *   function returning one;
 * - `requestTimeout`: milliseconds a request waits for its reply (default 10000);
 * - `reconnect`: `{ base, max, attempts }` for `backoffDelay`, or `false` to never reconnect;
 * - `onOpen({ reconnected, attempt, rooms })` (`rooms`: those joined before, to join again), `onClose({ code, reason, retryIn })` (`retryIn`
 *   is the delay in ms before the next attempt, or null when there is none), `onRefusal(error)`
 *   for error replies that answer no request;
 * - `protocol`: the server's `Protocol`; then `request`, `emit` and `on` refuse tags it does not
 *   declare with a `ProtocolError`, and the subprotocol is the one it names.
 */
export class PalisadeClient {
  constructor(url, options = {}) {
    this.url = url;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.WebSocket !== 'function') {
      throw new TypeError('no WebSocket class: pass one as the `WebSocket` option');
    }
    this.protocols = options.protocols ?? [];
    this.protocol = options.protocol ?? null;
    this.requestTimeout = options.requestTimeout ?? 10000;
    this.reconnect = options.reconnect === false ? null : { attempts: Infinity, ...options.reconnect };
    this.onOpen = options.onOpen ?? (() => {});
    this.onClose = options.onClose ?? (() => {});
    this.onRefusal = options.onRefusal ?? (() => {});
    this.random = options.random ?? Math.random;
    this.socket = null;
    this.nextId = 0;
    this.pending = new Map();
    this.listeners = new Map();
    this.handlers = new Map();
    this.positions = new Map();
    this.attempt = 0;
    this.opened = false;
    this.stopped = false;
    this.retryTimer = null;
  }

  /** Opens the connection (and keeps reopening it by the rules above). */
  connect() {
    this.stopped = false;
    this.open();
    return this;
  }

  /** Whether a connection is open now. */
  get isOpen() {
    return this.socket !== null && this.socket.readyState === 1;
  }

  /** Calls `handler(data)` for each event `event` from the server; returns an unsubscribe function. */
  on(event, handler) {
    if (this.protocol !== null && this.protocol.message('push', event) === undefined) {
      throw new ProtocolError(`the server never pushes ${event}: the protocol has no such push`);
    }
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event).add(handler);
    return () => this.listeners.get(event)?.delete(handler);
  }

  /** Answers the server's requests `event` with `handler(data)` (may be async). */
  handle(event, handler) {
    this.handlers.set(event, handler);
  }

  // ANCHOR: request
  /** Sends an event; nothing is answered. */
  emit(event, data = null) {
    if (this.protocol !== null && this.protocol.message('event', event) === undefined) {
      throw new ProtocolError(`${event} is not an event of the protocol`);
    }
    this.send({ event, data });
  }

  /**
   * Sends a request and resolves with the ok reply's `data`; rejects with a `ReplyError` (the
   * server's code), a `TimeoutError` or a `ClosedError`.
   */
  request(event, data = null, { timeout = this.requestTimeout, onReply = null } = {}) {
    if (this.nextId > MAX_ID) return Promise.reject(new Error('request ids exhausted'));
    if (this.protocol !== null && !this.protocol.requestable(event)) {
      return Promise.reject(new ProtocolError(`${event} is not a request of the protocol`));
    }
    const id = this.nextId;
    try {
      this.send({ event, id, data });
    } catch (err) {
      return Promise.reject(err);
    }
    this.nextId += 1;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        // The id stays used: a late reply is recognised as late and dropped.
        this.pending.delete(id);
        reject(new TimeoutError(event, timeout));
      }, timeout);
      this.pending.set(id, { resolve, reject, timer, onReply });
    });
  }
  // ANCHOR_END: request

  // ANCHOR: join
  /**
   * Joins `room` (palisade-rooms' `room.join`), with the position last seen there if any, and
   * resolves with the join reply: `{room, presence, recovery?}`. With `recovery.recovered`,
   * `recovery.publications` are exactly the `room.message` data missed since that position.
   */
  async join(room) {
    const position = this.positions.get(room);
    const data = position ? { room, recover: position } : { room };
    // The position is taken from the reply as it arrives: the room's next publications may be
    // in the same read, right behind it.
    const onReply = (reply) => {
      const recovery = reply?.recovery;
      this.positions.set(room, recovery ? { epoch: recovery.epoch, offset: recovery.offset } : null);
    };
    return this.request('room.join', data, { onReply });
  }

  /** Leaves `room` and forgets its position. */
  async leave(room) {
    this.positions.delete(room);
    return this.request('room.leave', { room });
  }

  /** Where the client stands in `room`: `{epoch, offset}`, or null (no recovery, or not joined). */
  position(room) {
    return this.positions.get(room) ?? null;
  }
  // ANCHOR_END: join

  /** Closes for good: no reconnection follows. */
  close(code = 1000, reason = '') {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.socket !== null && this.socket.readyState <= 1) this.socket.close(code, reason);
  }

  send(message) {
    if (!this.isOpen) throw new ClosedError(NO_CLOSE, 'not connected');
    this.socket.send(JSON.stringify(message));
  }

  /** Whether a reconnection is scheduled. */
  get reconnecting() {
    return this.retryTimer !== null;
  }

  open() {
    this.retryTimer = null;
    const url = typeof this.url === 'function' ? this.url() : this.url;
    const extra = typeof this.protocols === 'function' ? this.protocols() : this.protocols;
    const subprotocol = this.protocol?.subprotocol ?? SUBPROTOCOL;
    const socket = new this.WebSocket(url, [subprotocol, ...extra]);
    this.socket = socket;
    socket.onopen = () => {
      const reconnected = this.opened;
      this.opened = true;
      const attempt = this.attempt;
      this.attempt = 0;
      this.onOpen({ reconnected, attempt, rooms: [...this.positions.keys()] });
    };
    socket.onmessage = (event) => this.receive(event.data);
    socket.onclose = (event) => this.closed(socket, event.code, event.reason);
  }

  // ANCHOR: receive
  receive(text) {
    let message;
    try {
      message = JSON.parse(typeof text === 'string' ? text : String(text));
    } catch {
      return; // a palisade server sends JSON only; nothing to answer
    }
    if (message === null || typeof message !== 'object') return;
    if ('reply' in message) {
      this.reply(message);
    } else if (typeof message.event === 'string' && 'id' in message) {
      this.answer(message.event, message.id, message.data ?? null);
    } else if (typeof message.event === 'string') {
      if (message.event === ROOM_MESSAGE) this.advance(message.data);
      for (const handler of this.listeners.get(message.event) ?? []) handler(message.data ?? null);
    }
  }

  reply(message) {
    const error = message.status === 'error';
    if (message.reply === null) {
      if (error) this.onRefusal(new ReplyError(message.error, null));
      return;
    }
    const waiting = this.pending.get(message.reply);
    if (waiting === undefined) {
      // A late reply (the id was sent and timed out) is dropped; a reply to an id never sent
      // is the peer's mistake, told once, and an error is never answered with an error.
      if (!error && !(Number.isInteger(message.reply) && message.reply < this.nextId)) {
        this.sendError(null, 'unknown_reply', 'a reply to no request that was sent');
      }
      return;
    }
    this.pending.delete(message.reply);
    clearTimeout(waiting.timer);
    if (error) waiting.reject(new ReplyError(message.error, message.reply));
    else {
      // Before any later message of the same read is handled (Node's `ws` hands over a whole
      // read's messages in one go, before promise callbacks run).
      waiting.onReply?.(message.data ?? null);
      waiting.resolve(message.data ?? null);
    }
  }

  async answer(event, id, data) {
    const handler = this.handlers.get(event);
    if (handler === undefined) {
      this.sendError(id, 'unknown_event', 'no such event');
      return;
    }
    try {
      const result = await handler(data);
      if (this.isOpen) this.send({ reply: id, status: 'ok', data: result ?? null });
    } catch (err) {
      if (err instanceof ReplyError) this.sendError(id, err.code, err.message, err.path);
      else this.sendError(id, 'internal', 'internal error');
    }
  }
  // ANCHOR_END: receive

  /** A live publication moves the room's position on (offsets only grow within an epoch). */
  advance(publication) {
    const position = this.positions.get(publication?.room);
    if (position && Number.isInteger(publication.offset) && publication.offset > position.offset) {
      position.offset = publication.offset;
    }
  }

  sendError(id, code, message, path = null) {
    if (!this.isOpen) return;
    const error = path === null ? { code, message } : { code, message, path };
    this.send({ reply: id, status: 'error', error });
  }

  // ANCHOR: closed
  closed(socket, code, reason) {
    if (socket !== this.socket) return;
    this.socket = null;
    for (const { reject, timer } of this.pending.values()) {
      clearTimeout(timer);
      reject(new ClosedError(code, reason));
    }
    this.pending.clear();
    let retryIn = null;
    if (!this.stopped && this.reconnect !== null && retryable(code)) {
      if (this.attempt < this.reconnect.attempts) {
        retryIn = backoffDelay(this.attempt, this.reconnect, this.random);
        this.attempt += 1;
        this.retryTimer = setTimeout(() => this.open(), retryIn);
      }
    }
    this.onClose({ code, reason, retryIn });
  }
  // ANCHOR_END: closed
}
