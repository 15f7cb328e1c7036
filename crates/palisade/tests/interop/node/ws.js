// Node `ws` peers (perMessageDeflate on) for palisade's interop tests.
//
// Usage: node ws.js server         — an echo server on 127.0.0.1; prints `PORT <n>`, then
//                                     `EXT <its Sec-WebSocket-Extensions answer>` per connection
//        node ws.js client URL     — connects offering permessage-deflate, prints `EXT <answer>`,
//                                     echoes messages of several kinds, prints `ECHO OK`, closes
// Either ends itself after TIMEOUT seconds.

'use strict';
const crypto = require('crypto');
const { WebSocket, WebSocketServer } = require('ws');

const TIMEOUT = 60;
setTimeout(() => process.exit(3), TIMEOUT * 1000).unref();

// Compress every message, however small.
const perMessageDeflate = { threshold: 0 };

function server() {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate, maxPayload: 0 });
  wss.on('headers', (headers) => {
    const ext = headers.find((h) => h.toLowerCase().startsWith('sec-websocket-extensions:'));
    console.log(`EXT ${ext ? ext.slice(ext.indexOf(':') + 1).trim() : '-'}`);
  });
  wss.on('connection', (ws) => {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    ws.on('close', (code, reason) => console.log(`CLOSED ${code} ${reason}`.trimEnd()));
  });
  wss.on('listening', () => console.log(`PORT ${wss.address().port}`));
}

function client(url) {
  const ws = new WebSocket(url, { perMessageDeflate, maxPayload: 0 });
  const messages = [
    'hello, compressed world '.repeat(40),
    'hello, compressed world '.repeat(40),
    'short',
    'é'.repeat(100000),
    Buffer.alloc(1000000),
    crypto.randomBytes(50000),
    '',
  ];
  let next = 0;
  const sendNext = () => {
    const m = messages[next];
    ws.send(m, { binary: Buffer.isBuffer(m) });
  };
  ws.on('upgrade', (res) => console.log(`EXT ${res.headers['sec-websocket-extensions'] || '-'}`));
  ws.on('open', sendNext);
  ws.on('message', (data, isBinary) => {
    const expected = messages[next];
    const ok = Buffer.isBuffer(expected)
      ? isBinary && data.equals(expected)
      : !isBinary && data.toString('utf8') === expected;
    if (!ok) {
      console.log(`MISMATCH ${next}`);
      process.exit(1);
    }
    next += 1;
    if (next === messages.length) {
      console.log('ECHO OK');
      ws.close(1000, 'done');
    } else {
      sendNext();
    }
  });
  ws.on('close', (code, reason) => console.log(`CLOSED ${code} ${reason}`.trimEnd()));
}

const [mode, url] = process.argv.slice(2);
if (mode === 'server') server();
else if (mode === 'client') client(url);
else {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
