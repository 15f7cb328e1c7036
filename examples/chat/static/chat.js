// The chat page: logs in with POST /login, connects to /ws with palisade.js, and shows every
// reply, push and close the server sends. No framework, no build step.

import { PalisadeClient, Protocol, ReplyError } from '/palisade.js';

// What /ws speaks, as the server describes it: the client sends only the requests and events
// declared there and listens only for its pushes.
const protocol = await Protocol.fetch('/protocol.json');

const $ = (id) => document.getElementById(id);

const state = {
  name: null,
  token: sessionStorage.getItem('chat.token'),
  rooms: [],
  current: null,
  // Who is online: user name → the ids of their sessions in `@online`.
  online: new Map(),
  // The resume token of the last `welcome`: the next connection takes that session over.
  resume: null,
  typing: new Map(),
  client: null,
};
// For the browser tests and for poking at it from the console.
window.chat = state;

function notice(text) {
  $('notice').textContent = text;
}

function setStatus(text, kind) {
  $('status').textContent = text;
  $('status').className = `status ${kind}`;
}

function line(parts, className = '') {
  const li = document.createElement('li');
  li.className = className;
  for (const [cls, text] of parts) {
    const span = document.createElement('span');
    if (cls) span.className = cls;
    span.textContent = text;
    li.append(span);
  }
  $('messages').append(li);
  $('messages').scrollTop = $('messages').scrollHeight;
}

/** Shows a publication of a room (`room.message` data): a message said there. */
function showMessage(publication, recovered = false) {
  if (publication.event !== 'said') return false;
  const { from, text } = publication.data;
  line(
    [['room', `#${publication.room}`], ['from', `${from}:`], ['text', text]],
    recovered ? 'message recovered' : 'message',
  );
  return true;
}

function seen(user, session) {
  if (!state.online.has(user)) state.online.set(user, new Set());
  state.online.get(user).add(session);
}

function renderOnline() {
  const names = [...state.online.keys()].sort();
  $('online').replaceChildren(...names.map((n) => Object.assign(document.createElement('li'), { textContent: n })));
}

function renderRooms() {
  const list = $('rooms');
  list.replaceChildren();
  for (const room of state.rooms) {
    const li = document.createElement('li');
    li.textContent = `#${room}`;
    li.className = room === state.current ? 'current' : '';
    li.addEventListener('click', () => {
      state.current = room;
      renderRooms();
    });
    list.append(li);
  }
}

function showTyping(name) {
  clearTimeout(state.typing.get(name));
  state.typing.set(name, setTimeout(() => {
    state.typing.delete(name);
    renderTyping();
  }, 3000));
  renderTyping();
}

function renderTyping() {
  const names = [...state.typing.keys()];
  $('typing').textContent = names.length ? `${names.join(', ')} ${names.length > 1 ? 'are' : 'is'} typing…` : '';
}

// ANCHOR: join
/**
 * Joins `room`. After a reconnection, palisade.js joins from the position last seen there, and
 * the reply's `recovery.publications` are exactly the messages missed meanwhile.
 */
async function join(room) {
  const rejoining = state.client.position(room) !== null;
  const joined = await state.client.join(room);
  if (!state.rooms.includes(room)) state.rooms.push(room);
  if (state.current === null) state.current = room;
  renderRooms();
  const recovery = joined.recovery;
  if (!recovery) return;
  let shown = 0;
  for (const publication of recovery.publications) {
    if (showMessage(publication, rejoining)) shown += 1;
  }
  if (rejoining && recovery.recovered && shown > 0) {
    line([[null, `recovered ${shown} missed message${shown > 1 ? 's' : ''} in #${room}`]], 'notice');
  }
  if (rejoining && !recovery.recovered) {
    line([[null, `#${room}: what was said while you were away is lost (${recovery.reason})`]], 'notice');
  }
}
// ANCHOR_END: join

// ANCHOR: close
/** What the page says about a close, and whether it logs out. */
function explainClose({ code, reason, retryIn }) {
  if (retryIn !== null) {
    return [`disconnected (${code}${reason ? ` ${reason}` : ''}): reconnecting in ${(retryIn / 1000).toFixed(1)} s`, false];
  }
  switch (code) {
    case 4001:
      return [`refused: ${reason || 'not authenticated'} (4001): log in again`, true];
    case 4003:
      return [`refused: ${reason || 'forbidden'} (4003)`, true];
    case 1008:
      return [`closed by the server: ${reason || 'policy violation'} (1008); not reconnecting`, false];
    case 1000:
      if (reason === 'inactivity timeout') {
        return ['closed after inactivity (1000 inactivity timeout): log in again to continue', true];
      }
      if (reason === 'session replaced') {
        return ['closed: this session goes on in a newer connection (1000 session replaced)', false];
      }
      return [`closed (1000${reason ? ` ${reason}` : ''})`, false];
    default:
      return [`closed (${code}${reason ? ` ${reason}` : ''}); not reconnecting`, false];
  }
}
// ANCHOR_END: close

function showLogin(message) {
  sessionStorage.removeItem('chat.token');
  state.token = null;
  state.resume = null;
  // A new login starts afresh: its connection joins the lobby, as the first one did.
  state.rooms = [];
  state.current = null;
  renderRooms();
  $('messages').replaceChildren();
  $('login').hidden = false;
  $('chat').hidden = true;
  $('login-error').textContent = message;
}

function connect() {
  $('login').hidden = true;
  $('chat').hidden = false;
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  // ANCHOR: connect
  // The token travels as a subprotocol (a page can set no header); `refusal=close` asks for
  // a refusal the page can read: accepted, then closed with 4001 or 4003 and the reason.
  const client = new PalisadeClient(`${scheme}://${location.host}/ws?refusal=close`, {
    protocol,
    protocols: () => [`bearer.${state.token}`, ...(state.resume ? [`resume.${state.resume}`] : [])],
    reconnect: { base: 500, max: 8000 },
    onOpen: async ({ reconnected, rooms }) => {
      setStatus('online', 'online');
      notice(reconnected ? 'reconnected' : '');
      const again = rooms.length > 0 ? rooms : ['lobby'];
      for (const room of again) {
        await join(room).catch((err) => notice(`join ${room}: ${err.message}`));
      }
    },
    onClose: (info) => {
      const [text, logout] = explainClose(info);
      setStatus(info.retryIn === null ? 'closed' : 'reconnecting', 'closed');
      state.typing.clear();
      renderTyping();
      notice(text);
      if (logout) showLogin(text);
    },
    onRefusal: (err) => notice(`refused by the server: ${err.code}: ${err.message}`),
  });
  // ANCHOR_END: connect
  state.client = client;

  client.on('welcome', ({ name, online, resume }) => {
    state.name = name;
    state.resume = resume;
    $('me').textContent = name;
    state.online = new Map();
    for (const { user, session } of online) seen(user, session);
    renderOnline();
  });
  // ANCHOR: events
  client.on('room.message', (publication) => {
    if (publication.event === 'typing') showTyping(publication.data.name);
    else showMessage(publication);
  });
  client.on('private', ({ from, text }) => line([['from', `from ${from}:`], ['text', text]], 'private'));
  // Presence in `@online`, the room every session is in, is who is online. By session: when a
  // page comes back, its new session may join before its old one is seen leaving.
  client.on('presence.join', ({ room, user, session }) => {
    if (room === '@online') {
      seen(user, session);
      renderOnline();
    } else if (user !== state.name) {
      line([[null, `${user} joined #${room}`]], 'notice');
    }
  });
  client.on('presence.leave', ({ room, user, session }) => {
    if (room === '@online') {
      const sessions = state.online.get(user);
      sessions?.delete(session);
      if (sessions?.size === 0) state.online.delete(user);
      renderOnline();
    } else {
      line([[null, `${user} left #${room}`]], 'notice');
    }
  });
  // ANCHOR_END: events
  client.on('keepalive', ({ rtt_ms }) => {
    $('rtt').textContent = `rtt ${rtt_ms.toFixed(1)} ms`;
  });
  client.connect();
}

$('login-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('login-error').textContent = '';
  const response = await fetch('/login', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: $('name').value }),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    $('login-error').textContent = body.message ?? `login failed (${response.status})`;
    return;
  }
  state.token = body.token;
  sessionStorage.setItem('chat.token', body.token);
  connect();
});

// ANCHOR: send
$('send-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('send-error').textContent = '';
  const to = $('to').value.trim();
  const text = $('text').value;
  try {
    if (to) {
      await state.client.request('private', { to, text });
      line([['from', `to ${to}:`], ['text', text]], 'private');
    } else {
      await state.client.request('say', { room: state.current, text });
    }
    $('text').value = '';
  } catch (err) {
    // An error reply: shown beside the input; the connection is still up.
    $('send-error').textContent = err instanceof ReplyError ? `${err.code}: ${err.message}` : err.message;
  }
});
// ANCHOR_END: send

$('join-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('join-error').textContent = '';
  const room = $('room-name').value.trim();
  try {
    await join(room);
    state.current = room;
    renderRooms();
    $('room-name').value = '';
  } catch (err) {
    $('join-error').textContent = err instanceof ReplyError ? `${err.code}: ${err.message}` : err.message;
  }
});

let lastTyping = 0;
$('text').addEventListener('input', () => {
  const now = Date.now();
  if (state.client?.isOpen && state.current && now - lastTyping > 2000) {
    lastTyping = now;
    state.client.emit('typing', { room: state.current });
  }
});

if (state.token) connect();
