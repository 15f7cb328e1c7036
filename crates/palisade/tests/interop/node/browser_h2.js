// Headless Chromium (Debian's, driven by playwright-core) against palisade's HTTP/2 server over
// TLS: loads PAGE_URL (HTTP/2 by ALPN), then opens `new WebSocket(WS_URL)` in the page, sends
// "hello" and prints what it observed, one fact per line:
//   PAGE <the navigation's nextHopProtocol, e.g. h2>
//   MESSAGE <the first message the server sent>
//   ECHO <the echo of "hello">
//   CLOSED <code>          (after the page closes with 1000)
//   ERROR <what failed>    (instead, when the socket fails)
// Usage: node browser_h2.js PAGE_URL WS_URL. The certificate is a test one: Chromium runs with
// --ignore-certificate-errors.
const { chromium } = require('playwright-core');

async function main(pageUrl, wsUrl) {
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--no-sandbox',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--ignore-certificate-errors',
    ],
  });
  try {
    const page = await browser.newPage({ ignoreHTTPSErrors: true });
    await page.goto(pageUrl);
    const protocol = await page.evaluate(
      () => performance.getEntriesByType('navigation')[0].nextHopProtocol,
    );
    console.log(`PAGE ${protocol}`);
    const lines = await page.evaluate(
      (url) =>
        new Promise((resolve) => {
          const lines = [];
          const ws = new WebSocket(url);
          ws.onmessage = (event) => {
            if (lines.length === 0) {
              lines.push(`MESSAGE ${event.data}`);
              ws.send('hello');
            } else {
              lines.push(`ECHO ${event.data}`);
              ws.close(1000, 'done');
            }
          };
          ws.onerror = () => lines.push('ERROR the WebSocket failed');
          ws.onclose = (event) => {
            lines.push(`CLOSED ${event.code}`);
            resolve(lines);
          };
          setTimeout(() => resolve([...lines, 'ERROR timed out']), 15000);
        }),
      wsUrl,
    );
    for (const line of lines) console.log(line);
  } finally {
    await browser.close();
  }
}

main(process.argv[2], process.argv[3]).catch((err) => {
  console.log(`ERROR ${err.message.split('\n')[0]}`);
  process.exit(1);
});
