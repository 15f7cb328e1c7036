// The chat's page in headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core),
// against the real chat server, which this script starts, stops and restarts itself.
//
// Usage: node browser.mjs CHAT_BINARY SCREENSHOT_DIR
// Prints one `ok <case>` line per case and `browser: N passed, 0 failed` at the end, and keeps
// a picture of a page in SCREENSHOT_DIR/chat.png (the one in the README); on a failure, `FAILED <case>: …`, a screenshot of every open page in SCREENSHOT_DIR, exit 1.
// Ends itself (and the servers it started) after 120 s whatever happens.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

import { chromium } from 'playwright-core';

const [binary, screenshots] = process.argv.slice(2);
if (!binary || !screenshots) {
  console.error('usage: node browser.mjs CHAT_BINARY SCREENSHOT_DIR');
  process.exit(2);
}

const children = new Set();
function stopAll() {
  for (const child of children) child.kill('SIGKILL');
}
process.on('exit', stopAll);
setTimeout(() => {
  console.log('timed out');
  process.exit(3);
}, 120000).unref();

const SECRET = 'a test secret of the chat, 32 bytes or more';
const WAIT = { timeout: 15000 };

/** Starts the chat server; resolves with the process and its URL once it listens. */
function startChat(args) {
  const child = spawn(binary, args, {
    env: { ...process.env, CHAT_SECRET: SECRET, RUST_LOG: process.env.CHAT_LOG ?? 'warn' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.add(child);
  child.on('exit', () => children.delete(child));
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.on('line', (line) => {
      if (line.startsWith('chat on ')) resolve({ child, url: line.slice('chat on '.length) });
    });
    child.on('exit', (code) => reject(new Error(`the chat server exited (${code})`)));
  });
}

/** Stops a server with SIGTERM (its graceful shutdown) and waits for it to end. */
function stopChat(child) {
  return new Promise((resolve) => {
    child.on('exit', resolve);
    child.kill('SIGTERM');
  });
}

/** A TCP proxy whose connections the test can cut, to drop a page's connection for real. */
function proxy(targetPort) {
  const sockets = new Set();
  let cut = false;
  const server = net.createServer((client) => {
    if (cut) {
      client.destroy();
      return;
    }
    const upstream = net.connect(targetPort, '127.0.0.1');
    for (const [a, b] of [[client, upstream], [upstream, client]]) {
      a.pipe(b);
      a.on('error', () => b.destroy());
      a.on('close', () => b.destroy());
      sockets.add(a);
      a.on('close', () => sockets.delete(a));
    }
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () =>
      resolve({
        port: server.address().port,
        cut() {
          cut = true;
          for (const socket of sockets) socket.destroy();
        },
        heal() {
          cut = false;
        },
        close() {
          server.close();
        },
      }),
    );
  });
}

/** An HS256 token signed with the server's secret, expired an hour ago. */
function expiredToken(name) {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const body = `${b64({ typ: 'JWT', alg: 'HS256' })}.${b64({ sub: name, iat: now - 7200, exp: now - 3600 })}`;
  return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`;
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const pages = new Map();

let passed = 0;
async function test(name, body) {
  try {
    await body();
  } catch (err) {
    console.log(`FAILED ${name}: ${err?.stack ?? err}`);
    mkdirSync(screenshots, { recursive: true });
    for (const [who, page] of pages) {
      const file = join(screenshots, `${name.replace(/[^a-z0-9]+/gi, '-')}-${who}.png`);
      await page.screenshot({ path: file, fullPage: true }).catch(() => {});
      console.log(`screenshot ${file}`);
    }
    await browser.close().catch(() => {});
    process.exit(1);
  }
  passed += 1;
  console.log(`ok ${name}`);
}

/** A page in a fresh browser context (its own session storage), opened at `url`. */
async function open(who, url, token) {
  const context = await browser.newContext();
  if (token !== undefined) {
    await context.addInitScript((t) => sessionStorage.setItem('chat.token', t), token);
  }
  const page = await context.newPage();
  pages.set(who, page);
  await page.goto(url);
  return page;
}

async function login(page, name) {
  await page.fill('#name', name);
  await page.click('#login-form button');
}

const text = (page, selector) => page.locator(selector).textContent();
const waitText = (page, selector, hasText) =>
  page.locator(selector, { hasText }).first().waitFor(WAIT);

/** A port that was free a moment ago. */
function freePort() {
  return new Promise((resolve) => {
    const probe = net.createServer().listen(0, '127.0.0.1', () => {
      const { port: free } = probe.address();
      probe.close(() => resolve(free));
    });
  });
}

// The server's own page goes through a proxy, so that a page's connection can be cut; its
// origin must be allowed.
const port = await freePort();
const link = await proxy(port);
const proxied = `http://127.0.0.1:${link.port}/`;
const serverArgs = [
  '--addr', `127.0.0.1:${port}`,
  '--allow-origin', `http://127.0.0.1:${link.port}`,
  '--keepalive', '0.5',
];
let chat = await startChat(serverArgs);
const direct = chat.url;

let alice;
let bob;

await test('two pages log in, join the lobby, see each other online, typing and messages', async () => {
  alice = await open('alice', proxied);
  bob = await open('bob', direct);
  await login(alice, 'alice');
  await login(bob, 'bob');
  await waitText(alice, '#online li', 'bob');
  await waitText(bob, '#online li', 'alice');
  await waitText(alice, '#rooms li', '#lobby');
  await waitText(alice, '#messages li', 'bob joined #lobby');
  await bob.fill('#text', 'hello from bob');
  await waitText(alice, '#typing', 'bob is typing');
  await bob.click('#send-form button');
  await waitText(alice, '#messages li.message', 'hello from bob');
  await waitText(bob, '#messages li.message', 'hello from bob');
  await waitText(alice, '#rtt', 'rtt');
});

await test('private messages, and "no such user" beside the input', async () => {
  await bob.fill('#to', 'alice');
  await bob.fill('#text', 'just for you');
  await bob.click('#send-form button');
  await waitText(alice, '#messages li.private', 'from bob:');
  await waitText(bob, '#messages li.private', 'to alice:');
  await bob.fill('#to', 'nobody');
  await bob.fill('#text', 'anyone?');
  await bob.click('#send-form button');
  await waitText(bob, '#send-error', 'no_such_user: no such user');
  // The picture of the page in the README and the book comes from here.
  mkdirSync(screenshots, { recursive: true });
  await bob.setViewportSize({ width: 960, height: 640 });
  await bob.screenshot({ path: join(screenshots, 'chat.png') });
  await bob.fill('#to', '');
});

await test('the page follows the protocol description: an undeclared message fails before it is sent', async () => {
  const seen = await bob.evaluate(async () => {
    const client = window.chat.client;
    const outcome = async (promise) => promise.then(() => 'ok', (err) => err.code);
    let push = 'ok';
    try {
      client.on('no.such.push', () => {});
    } catch (err) {
      push = err.code;
    }
    return {
      undeclared: await outcome(client.request('shout', {})),
      event: await outcome(Promise.resolve().then(() => client.emit('say', {}))),
      push,
      // Declared, and answered by the server: the request reaches it.
      say: await outcome(client.request('say', { room: 'lobby', text: '' })),
      sayErrors: client.protocol.errorCodes('say'),
      joinErrors: client.protocol.errorCodes('room.join'),
      open: client.isOpen,
    };
  });
  assert.deepEqual(seen, {
    undeclared: 'not_in_protocol',
    event: 'not_in_protocol',
    push: 'not_in_protocol',
    say: 'validation_failed',
    sayErrors: ['not_joined', 'no_such_user', 'rate_limited', 'unavailable'],
    joinErrors: ['invalid_room', 'too_many_rooms', 'already_joined', 'unavailable'],
    open: true,
  });
});

await test('a too long and an empty message get their error replies; the connection stays up', async () => {
  await alice.fill('#text', 'x'.repeat(501));
  await alice.click('#send-form button');
  await waitText(alice, '#send-error', 'validation_failed');
  const error = await text(alice, '#send-error');
  if (!error.includes('longer than 500 characters')) throw new Error(error);
  await alice.fill('#text', '   ');
  await alice.click('#send-form button');
  await waitText(alice, '#send-error', 'the message is empty');
  if ((await text(alice, '#status')) !== 'online') throw new Error('the connection went down');
  await alice.fill('#text', 'still here');
  await alice.click('#send-form button');
  await waitText(bob, '#messages li.message', 'still here');
});

await test('a bad and an expired token are refused, and the page says why', async () => {
  const bad = await open('bad-token', direct, 'not.a.token');
  await waitText(bad, '#login-error', 'refused: invalid token (4001)');
  const expired = await open('expired-token', direct, expiredToken('carol'));
  await waitText(expired, '#login-error', 'refused: expired token (4001)');
  for (const page of [bad, expired]) {
    if (await page.locator('#login').isHidden()) throw new Error('the login form is not shown');
  }
});

await test('a duplicate login is refused', async () => {
  const again = await open('alice-again', direct);
  await login(again, 'alice');
  await waitText(again, '#login-error', 'this name has a session already');
});

await test('a dropped connection: the page reconnects and shows the messages it missed', async () => {
  link.cut();
  await waitText(alice, '#notice', 'reconnecting in');
  await bob.fill('#text', 'while you were away');
  await bob.click('#send-form button');
  await waitText(bob, '#messages li.message', 'while you were away');
  link.heal();
  await waitText(alice, '#messages li.recovered', 'while you were away');
  await waitText(alice, '#messages li.notice', 'recovered 1 missed message in #lobby');
  await waitText(alice, '#status', 'online');
});

await test('a restart: 1001 "server restarting" is shown, and the pages reconnect', async () => {
  await stopChat(chat.child);
  await waitText(bob, '#notice', 'disconnected (1001 server restarting): reconnecting in');
  chat = await startChat(serverArgs);
  await waitText(bob, '#notice', 'reconnected');
  await waitText(alice, '#status', 'online');
  await waitText(bob, '#online li', 'alice');
  await alice.fill('#text', 'after the restart');
  await alice.click('#send-form button');
  await waitText(bob, '#messages li.message', 'after the restart');
});

await test('a killed server: the page shows the abnormal close (1006) and reconnects to its successor', async () => {
  await new Promise((resolve) => {
    chat.child.on('exit', resolve);
    chat.child.kill('SIGKILL');
  });
  await waitText(alice, '#notice', 'disconnected (1006): reconnecting in');
  chat = await startChat(serverArgs);
  await waitText(alice, '#notice', 'reconnected');
  await waitText(alice, '#status', 'online');
  await waitText(bob, '#status', 'online');
});

await test('a flood is closed with 1008 and not retried', async () => {
  await bob.evaluate(() => {
    for (let i = 0; i < 200; i += 1) window.chat.client.emit('typing', { room: 'lobby' });
  });
  await waitText(bob, '#notice', '(1008); not reconnecting');
  if ((await text(bob, '#status')) !== 'closed') throw new Error('not closed');
  const retrying = await bob.evaluate(() => window.chat.client.reconnecting);
  if (retrying) throw new Error('a reconnection is scheduled after 1008');
});

await test('an inactivity timeout closes with 1000 and the page says so', async () => {
  const idle = await startChat(['--addr', '127.0.0.1:0', '--inactivity', '1']);
  const page = await open('idle', idle.url);
  await login(page, 'dave');
  await waitText(page, '#status', 'online');
  await waitText(page, '#login-error', 'closed after inactivity (1000 inactivity timeout)');
  await stopChat(idle.child);
});

await test('with --redis, two servers and a page on each see each other online and talking', async () => {
  const redisPort = await freePort();
  const redis = spawn('redis-server', ['--port', `${redisPort}`, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  children.add(redis);
  redis.on('exit', () => children.delete(redis));
  const url = `redis://127.0.0.1:${redisPort}/`;
  // The servers connect to Redis at start: wait until it answers.
  for (let tries = 0; ; tries += 1) {
    const up = await new Promise((resolve) => {
      const probe = net.connect(redisPort, '127.0.0.1', () => {
        probe.destroy();
        resolve(true);
      });
      probe.on('error', () => resolve(false));
    });
    if (up) break;
    if (tries > 500) throw new Error('redis-server did not start');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  // Server one on a port of its own, so that its successor serves the page's URL again.
  const oneArgs = ['--addr', `127.0.0.1:${await freePort()}`, '--redis', url];
  let one = await startChat(oneArgs);
  const two = await startChat(['--addr', '127.0.0.1:0', '--redis', url]);
  const carol = await open('carol', one.url);
  const erin = await open('erin', two.url);
  await login(carol, 'carol');
  await login(erin, 'erin');
  await waitText(carol, '#online li', 'erin');
  await waitText(erin, '#online li', 'carol');
  await carol.fill('#text', 'hello from server one');
  await carol.click('#send-form button');
  await waitText(erin, '#messages li.message', 'hello from server one');
  await erin.fill('#to', 'carol');
  await erin.fill('#text', 'and back from two');
  await erin.click('#send-form button');
  await waitText(carol, '#messages li.private', 'from erin:');

  // Server one killed: Redis still counts carol's session as online until one's heartbeat
  // expires (5 s), yet her page, back within that time, takes its session over with its resume
  // token rather than being refused as a second login, and recovers from the room's stream
  // what erin said meanwhile.
  await new Promise((resolve) => {
    one.child.on('exit', resolve);
    one.child.kill('SIGKILL');
  });
  await waitText(carol, '#notice', 'disconnected (1006): reconnecting in');
  await erin.fill('#to', '');
  await erin.fill('#text', 'said while server one was down');
  await erin.click('#send-form button');
  await waitText(erin, '#messages li.message', 'said while server one was down');
  one = await startChat(oneArgs);
  await waitText(carol, '#notice', 'reconnected');
  await waitText(carol, '#messages li.recovered', 'said while server one was down');
  await waitText(carol, '#messages li.notice', 'recovered 1 missed message in #lobby');
  await waitText(carol, '#status', 'online');
  await waitText(carol, '#online li', 'erin');
  await erin.fill('#text', 'welcome back');
  await erin.click('#send-form button');
  await waitText(carol, '#messages li.message', 'welcome back');
  await stopChat(one.child);
  await stopChat(two.child);
  redis.kill('SIGKILL');
});

await browser.close();
link.close();
await stopChat(chat.child);
console.log(`browser: ${passed} passed, 0 failed`);
process.exit(0);
