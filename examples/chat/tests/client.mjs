// palisade.js under Node, against real peers: a palisade server speaking palisade-json
// (`examples/json_requests.rs`, whose URL is the first argument) and, for what that server
// never does (leave a request unanswered, close with a given code), a local `ws` server.
//
// Usage: node client.mjs ws://127.0.0.1:PORT/
// Prints one `ok <case>` line per case and `client: N passed, 0 failed` at the end; exits 1 on
// the first failure. Ends itself after 60 s whatever happens.

import assert from 'node:assert/strict';
import { WebSocket, WebSocketServer } from 'ws';

import {
  ClosedError,
  PalisadeClient,
  ReplyError,
  SUBPROTOCOL,
  TimeoutError,
  backoffDelay,
  retryable,
} from '../static/palisade.js';

setTimeout(() => {
  console.log('timed out');
  process.exit(3);
}, 60000).unref();

const url = process.argv[2];
if (!url) {
  console.error('usage: node client.mjs ws://HOST:PORT/');
  process.exit(2);
}

let passed = 0;
async function test(name, body) {
  try {
    await body();
  } catch (err) {
    console.log(`FAILED ${name}: ${err?.stack ?? err}`);
    process.exit(1);
  }
  passed += 1;
  console.log(`ok ${name}`);
}

/** A client connected to `target`, resolved once open. */
function connected(target, options = {}) {
  return new Promise((resolve, reject) => {
    const client = new PalisadeClient(target, {
      WebSocket,
      reconnect: false,
      ...options,
      onOpen: (info) => {
        options.onOpen?.(info);
        resolve(client);
      },
      onClose: (info) => {
        options.onClose?.(info);
        reject(new Error(`closed before open: ${info.code}`));
      },
    });
    client.connect();
  });
}

/** The next `event` pushed to `client`. */
function next(client, event) {
  return new Promise((resolve) => {
    const off = client.on(event, (data) => {
      off();
      resolve(data);
    });
  });
}

/** A `ws` server on 127.0.0.1 that hands each connection to `onConnection`. */
function wsServer(onConnection) {
  return new Promise((resolve) => {
    const server = new WebSocketServer({
      host: '127.0.0.1',
      port: 0,
      handleProtocols: (protocols) => (protocols.has(SUBPROTOCOL) ? SUBPROTOCOL : false),
    });
    server.on('connection', onConnection);
    server.on('listening', () => resolve(server));
  });
}

await test('backoff grows, is capped and jittered into the upper half', () => {
  const options = { base: 100, max: 1000 };
  assert.equal(backoffDelay(0, options, () => 0), 50);
  assert.equal(backoffDelay(0, options, () => 1), 100);
  assert.equal(backoffDelay(3, options, () => 1), 800);
  assert.equal(backoffDelay(20, options, () => 0), 500);
  assert.equal(backoffDelay(20, options, () => 1), 1000);
  for (const code of [1001, 1006, 1011, 1012, 1013]) assert.ok(retryable(code), `${code}`);
  for (const code of [1000, 1002, 1003, 1007, 1008, 1009, 1010, 4001, 4003]) {
    assert.ok(!retryable(code), `${code}`);
  }
});

const client = await connected(url);

await test('the subprotocol is negotiated', () => {
  assert.equal(client.socket.protocol, SUBPROTOCOL);
});

await test('a request resolves with its ok reply', async () => {
  assert.deepEqual(await client.request('add', { a: 2, b: 3 }), { sum: 5 });
});

await test("an application error reply is a ReplyError with the server's code and path", async () => {
  const err = await client.request('divide', { a: 1, b: 0 }).then(
    () => assert.fail('resolved'),
    (e) => e,
  );
  assert.ok(err instanceof ReplyError);
  assert.equal(err.code, 'division_by_zero');
  assert.equal(err.path, 'data.b');
  assert.equal(err.message, 'cannot divide by zero');
  assert.equal(typeof err.reply, 'number');
});

await test("palisade's own refusals keep the connection: invalid_payload, unknown_event", async () => {
  await assert.rejects(client.request('add', { a: 'two', b: 3 }), {
    name: 'ReplyError',
    code: 'invalid_payload',
    path: 'data.a',
  });
  await assert.rejects(client.request('multiply', { a: 2, b: 3 }), {
    code: 'unknown_event',
  });
  assert.ok(client.isOpen);
  assert.deepEqual(await client.request('add', { a: 1, b: 1 }), { sum: 2 });
});

await test('a request the server drops is rejected with no_reply', async () => {
  // `echo` is an event for json_requests; as a request it is dropped, and palisade answers.
  await assert.rejects(client.request('echo', { seq: 1, text: 'hi' }), { code: 'no_reply' });
});

await test('events both ways', async () => {
  const echoed = next(client, 'echo');
  client.emit('echo', { seq: 7, text: 'héllo' });
  assert.deepEqual(await echoed, { seq: 7, text: 'héllo' });
});

await test("the server's request is answered by the registered handler", async () => {
  client.handle('confirm', ({ question }) => ({ answer: `yes to ${question}` }));
  const confirmed = next(client, 'confirmed');
  client.emit('ask', { question: 'proceed?' });
  assert.deepEqual(await confirmed, { answer: 'yes to proceed?' });
});

await test("a handler's ReplyError is sent as an error reply with its code", async () => {
  client.handle('confirm', () => {
    throw new ReplyError({ code: 'declined', message: 'the user said no' });
  });
  const unconfirmed = next(client, 'unconfirmed');
  client.emit('ask', { question: 'really?' });
  assert.equal(await unconfirmed, 'declined');
});

await test("an event's error reply (reply null) goes to onRefusal", async () => {
  const refusals = [];
  const other = await connected(url, { onRefusal: (e) => refusals.push(e) });
  other.emit('shout', { loud: true });
  // The refusal arrives before the reply to the next request: one connection, in order.
  assert.deepEqual(await other.request('add', { a: 0, b: 0 }), { sum: 0 });
  assert.equal(refusals.length, 1);
  assert.equal(refusals[0].code, 'unknown_event');
  assert.equal(refusals[0].reply, null);
  other.close();
});

await test('a close by the client is not followed by a reconnection; requests then fail', async () => {
  const closed = new Promise((resolve) => {
    client.onClose = resolve;
  });
  client.close(1000, 'done');
  const info = await closed;
  assert.equal(info.code, 1000);
  assert.equal(info.retryIn, null);
  await assert.rejects(client.request('add', { a: 1, b: 2 }), ClosedError);
});

await test('a request without a reply times out, and its late reply is dropped', async () => {
  let held = null;
  const server = await wsServer((ws) => {
    ws.on('message', (text) => {
      const message = JSON.parse(text);
      if (message.event === 'slow') held = message.id;
      if (message.event === 'fast') {
        // The late reply first, then the answer to `fast`.
        ws.send(JSON.stringify({ reply: held, status: 'ok', data: 'late' }));
        ws.send(JSON.stringify({ reply: message.id, status: 'ok', data: 'fast' }));
      }
      if (message.reply !== undefined) ws.send(JSON.stringify({ event: 'answered', data: message }));
    });
  });
  const c = await connected(`ws://127.0.0.1:${server.address().port}/`);
  const answered = [];
  c.on('answered', (m) => answered.push(m));
  await assert.rejects(c.request('slow', null, { timeout: 50 }), TimeoutError);
  assert.equal(await c.request('fast'), 'fast');
  // Nothing was sent back for the late reply (an `unknown_reply` would have been echoed).
  assert.deepEqual(answered, []);
  c.close();
  server.close();
});

await test('reconnects after 1001 and 1006 with backoff, joining again from its position; never after 1008, 4001, 4003, 1000', async () => {
  // Each connection: the join is answered with a recovery position, one publication follows,
  // then the connection ends as the plan says.
  const plan = [1001, 'drop', 1008];
  const recovers = [];
  let connections = 0;
  const server = await wsServer((ws) => {
    const step = plan[connections];
    const n = connections;
    connections += 1;
    ws.on('message', (text) => {
      const message = JSON.parse(text);
      if (message.event !== 'room.join') return;
      recovers.push(message.data.recover ?? null);
      const recovery = { epoch: 'e1', offset: 10 * n, recovered: n > 0, reason: null, publications: [] };
      ws.send(JSON.stringify({ reply: message.id, status: 'ok', data: { room: 'lobby', presence: [], recovery } }));
      const publication = { room: 'lobby', offset: 10 * n + 1, event: 'said', data: {} };
      ws.send(JSON.stringify({ event: 'room.message', data: publication }));
      if (step === 'drop') ws.terminate();
      else ws.close(step, step === 1001 ? 'server restarting' : 'too many messages');
    });
  });
  const events = [];
  let done;
  const finished = new Promise((resolve) => {
    done = resolve;
  });
  const c = new PalisadeClient(`ws://127.0.0.1:${server.address().port}/`, {
    WebSocket,
    reconnect: { base: 20, max: 40 },
    onOpen: ({ reconnected, rooms }) => {
      events.push(['open', reconnected, rooms]);
      c.join('lobby').catch(() => {});
    },
    onClose: ({ code, reason, retryIn }) => {
      events.push(['close', code, reason, retryIn === null ? null : 'retry']);
      if (retryIn === null) done();
    },
  });
  c.connect();
  await finished;
  assert.deepEqual(events, [
    ['open', false, []],
    ['close', 1001, 'server restarting', 'retry'],
    ['open', true, ['lobby']],
    ['close', 1006, '', 'retry'],
    ['open', true, ['lobby']],
    ['close', 1008, 'too many messages', null],
  ]);
  // The first join had no position; each later one came back from the last publication seen.
  assert.deepEqual(recovers, [null, { epoch: 'e1', offset: 1 }, { epoch: 'e1', offset: 11 }]);
  assert.deepEqual(c.position('lobby'), { epoch: 'e1', offset: 21 });
  // Nothing more: the client stays closed after 1008.
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(connections, 3);
  assert.equal(c.reconnecting, false);
  for (const code of [4001, 4003, 1000]) {
    const closed = new Promise((resolve) => {
      const once = new PalisadeClient(`ws://127.0.0.1:${server.address().port}/`, {
        WebSocket,
        reconnect: { base: 1, max: 1 },
        onOpen: () => once.join('lobby').catch(() => {}),
        onClose: resolve,
      });
      plan[connections] = code;
      once.connect();
    });
    const info = await closed;
    assert.equal(info.code, code);
    assert.equal(info.retryIn, null);
  }
  server.close();
});

console.log(`client: ${passed} passed, 0 failed`);
process.exit(0);
