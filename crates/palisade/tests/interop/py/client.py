"""Python `websockets` clients for palisade's server interop tests.

Usage: python client.py SCENARIO URL [ARGS...] — runs one scenario against a palisade server
on 127.0.0.1 and prints what it observed, one fact per line, then exits. A watchdog ends it
after TIMEOUT seconds.

Scenarios:
  echo URL            send text and binary messages of several sizes; print `ECHO OK`
  send URL TEXT       send TEXT, then print `CLOSED <code> <reason>` when the server closes
  big URL SIZE        send a binary message of SIZE bytes; print `CLOSED <code> <reason>`
  handshake URL [PROTOCOLS...]  print `OPEN <subprotocol or ->`, or `STATUS <code> <body>`
  origin URL ORIGIN   connect with the `Origin` header ORIGIN; print `OPEN`, or
                      `STATUS <code> <body on one line>`
  silent URL          stop reading after the handshake (so no pong is sent); after 3 s,
                      resume and print `CLOSED <code> <reason>`
  wait URL            print `OPEN`, then `CLOSED <code> <reason>` when the server closes
  listen URL N        print `OPEN`, then `RECV <text>` for each of N messages, then close
                      with 1000 and print `CLOSED <code> <reason>`
  deflate URL OFFER   offer permessage-deflate (OFFER: `default` as websockets does, or `lean`:
                      both no_context_takeover flags, server window 10, client window 9); print
                      `EXT <the server's Sec-WebSocket-Extensions>`, echo compressible and
                      incompressible messages, print `ECHO OK`
"""

import asyncio
import os
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

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
    if scenario == "origin":
        try:
            async with connect(url, origin=args[0]):
                print("OPEN", flush=True)
        except InvalidStatus as exc:
            # On one line: the body's whitespace runs become single spaces.
            body = " ".join(exc.response.body.decode("utf-8", "replace").split())
            print(f"STATUS {exc.response.status_code} {body}", flush=True)
        return
    if scenario == "deflate":
        await deflate(url, args[0])
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
        elif scenario == "listen":
            print("OPEN", flush=True)
            for _ in range(int(args[0])):
                print(f"RECV {await ws.recv()}", flush=True)
            await ws.close(1000, "done")
            closed(ws)
        else:
            raise SystemExit(f"unknown scenario {scenario}")


async def deflate(url, offer):
    factories = None
    if offer == "lean":
        factories = [
            ClientPerMessageDeflateFactory(
                server_no_context_takeover=True,
                client_no_context_takeover=True,
                server_max_window_bits=10,
                client_max_window_bits=9,
            )
        ]
    kwargs = {"extensions": factories, "compression": None} if factories else {}
    async with connect(url, max_size=None, ping_interval=None, **kwargs) as ws:
        print(f"EXT {ws.response.headers.get('Sec-WebSocket-Extensions', '-')}", flush=True)
        messages = [
            "hello, compressed world " * 40,
            "hello, compressed world " * 40,
            "short",
            "é" * 100000,
            b"\x00" * 1000000,
            os.urandom(50000),
            "",
        ]
        for message in messages:
            await ws.send(message)
            assert await ws.recv() == message, len(message)
        print("ECHO OK", flush=True)
        await ws.close(1000, "done")
        closed(ws)


async def watchdog():
    await asyncio.sleep(TIMEOUT)
    print("TIMEOUT", flush=True)
    os._exit(3)


async def run():
    asyncio.get_running_loop().create_task(watchdog())
    await main(*sys.argv[1:])


if __name__ == "__main__":
    asyncio.run(run())
