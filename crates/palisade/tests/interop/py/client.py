"""Python `websockets` clients for palisade's server interop tests.

Usage: python client.py SCENARIO URL [ARGS...] — runs one scenario against a palisade server
on 127.0.0.1 and prints what it observed, one fact per line, then exits. A watchdog ends it
after TIMEOUT seconds.

Scenarios:
  echo URL            send text and binary messages of several sizes; print `ECHO OK`
  send URL TEXT       send TEXT, then print `CLOSED <code> <reason>` when the server closes
  big URL SIZE        send a binary message of SIZE bytes; print `CLOSED <code> <reason>`
  handshake URL [PROTOCOLS...]  print `OPEN <subprotocol or ->`, or `STATUS <code> <body>`
  silent URL          stop reading after the handshake (so no pong is sent); after 3 s,
                      resume and print `CLOSED <code> <reason>`
  wait URL            print `OPEN`, then `CLOSED <code> <reason>` when the server closes
"""

import asyncio
import os
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

TIMEOUT = 60


def closed(ws):
    rcvd = ws.protocol.close_rcvd
    code = rcvd.code if rcvd is not None else 1006
    reason = rcvd.reason if rcvd is not None else ""
    print(f"CLOSED {code} {reason}".rstrip(), flush=True)


async def wait_closed(ws):
    try:
        async for _ in ws:
            pass
    except ConnectionClosed:
        pass
    closed(ws)


async def main(scenario, url, *args):
    if scenario == "handshake":
        try:
            async with connect(url, subprotocols=list(args) or None) as ws:
                print(f"OPEN {ws.subprotocol or '-'}", flush=True)
        except InvalidStatus as exc:
            body = exc.response.body.decode("utf-8", "replace")
            print(f"STATUS {exc.response.status_code} {body}", flush=True)
        return
    async with connect(url, max_size=None, ping_interval=None) as ws:
        if scenario == "echo":
            for size in (0, 1, 125, 126, 65535, 65536, 1000000):
                text = "é" * (size // 2)
                await ws.send(text)
                assert await ws.recv() == text, size
                data = bytes([size % 251]) * size
                await ws.send(data)
                assert await ws.recv() == data, size
            print("ECHO OK", flush=True)
            await ws.close(1000, "done")
            closed(ws)
        elif scenario == "send":
            await ws.send(args[0])
            await wait_closed(ws)
        elif scenario == "big":
            await ws.send(b"\x00" * int(args[0]))
            await wait_closed(ws)
        elif scenario == "silent":
            ws.transport.pause_reading()
            await asyncio.sleep(3)
            ws.transport.resume_reading()
            await wait_closed(ws)
        elif scenario == "wait":
            print("OPEN", flush=True)
            await wait_closed(ws)
        else:
            raise SystemExit(f"unknown scenario {scenario}")


async def watchdog():
    await asyncio.sleep(TIMEOUT)
    print("TIMEOUT", flush=True)
    os._exit(3)


async def run():
    asyncio.get_running_loop().create_task(watchdog())
    await main(*sys.argv[1:])


if __name__ == "__main__":
    asyncio.run(run())
