"""Python `aiohttp` as a WebSocket client and as a server, for palisade's interop tests.

Usage:
  python aiohttp_peer.py client URL [compress]
      echo text and binary messages of several sizes with palisade's server (`compress`:
      offer permessage-deflate); print `COMPRESS <window bits agreed, 0 for none>`,
      `ECHO OK`, then close with 1000 and print `CLOSED <code>` of the server's answer
  python aiohttp_peer.py server [PORT]
      print `PORT <n>` once listening on 127.0.0.1, echo every message on every path
      (accepting permessage-deflate when offered, as aiohttp does by default), print
      `CLOSED <code>` when a connection ends; on the path `/big`, send one binary message
      of 4 MiB instead and print `CLOSED <code>` once the client closes; serve until killed

A watchdog ends the process after TIMEOUT seconds.
"""

import asyncio
import os
import sys

import aiohttp
from aiohttp import web

TIMEOUT = 120
STEP = 10


async def client(url, *args):
    compress = 15 if "compress" in args else 0
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(
            url, compress=compress, autoping=True, heartbeat=None, timeout=STEP
        ) as ws:
            # The window bits agreed for permessage-deflate, 0 without it.
            print(f"COMPRESS {ws.compress}", flush=True)
            for size in [0, 1, 125, 126, 65_535, 65_536, 300_000]:
                text = "é" * (size // 2)
                await ws.send_str(text)
                got = await asyncio.wait_for(ws.receive(), STEP)
                assert got.type == aiohttp.WSMsgType.TEXT and got.data == text, f"text {size}"
                data = bytes([0xA5]) * size
                await ws.send_bytes(data)
                got = await asyncio.wait_for(ws.receive(), STEP)
                assert got.type == aiohttp.WSMsgType.BINARY and got.data == data, f"bin {size}"
            print("ECHO OK", flush=True)
            await ws.close(code=aiohttp.WSCloseCode.OK, message=b"done")
            print(f"CLOSED {ws.close_code}", flush=True)


async def echo(request):
    ws = web.WebSocketResponse(autoping=True, heartbeat=None)
    await ws.prepare(request)
    if request.path == "/big":
        await ws.send_bytes(bytes(4 << 20))
        async for _ in ws:
            pass
        print(f"CLOSED {ws.close_code}", flush=True)
        return ws
    async for message in ws:
        if message.type == aiohttp.WSMsgType.TEXT:
            await ws.send_str(message.data)
        elif message.type == aiohttp.WSMsgType.BINARY:
            await ws.send_bytes(message.data)
    print(f"CLOSED {ws.close_code}", flush=True)
    return ws


async def server(port="0"):
    app = web.Application()
    app.router.add_get("/{tail:.*}", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", int(port))
    await site.start()
    print(f"PORT {site._server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Future()


async def run():
    asyncio.get_running_loop().call_later(TIMEOUT, os._exit, 3)
    role, *args = sys.argv[1:]
    if role == "client":
        await client(*args)
    elif role == "server":
        await server(*args)
    else:
        sys.exit(f"unknown role {role}")


if __name__ == "__main__":
    asyncio.run(run())
