"""Python `websockets` servers for palisade's interop tests.

Usage: python server.py MODE [PORT] — prints `PORT <n>` once listening on 127.0.0.1, then
serves until killed, or until the watchdog ends it (TIMEOUT seconds).

Modes:
  echo      echo every message; closes with CODE REASON when sent the text "close CODE REASON";
            prints `CLOSED <code> <reason>` when a connection ends
  subproto  like echo, with subprotocols ["superchat", "chat"]
  auth401   process_request refuses with 401, a JSON body and WWW-Authenticate
  noping    completes the handshake, then stops reading (so answers no ping)
  lean      like echo, accepting permessage-deflate with both no_context_takeover flags and
            10-bit windows
  plain     like echo, without compression
  bomb      sends 10 MB of zeros (about 10 KB compressed), then prints `CLOSED <code> <reason>`
"""

import asyncio
import http
import json
import os
import sys

from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.http11 import Response

TIMEOUT = 120


async def echo(ws):
    try:
        async for message in ws:
            if isinstance(message, str) and message.startswith("close "):
                _, code, reason = message.split(" ", 2)
                await ws.close(int(code), reason)
                break
            await ws.send(message)
    finally:
        await ws.wait_closed()
        code = ws.close_code if ws.close_code is not None else 1006
        print(f"CLOSED {code} {ws.close_reason or ''}", flush=True)


def refuse(connection, request):
    body = json.dumps({"error": "invalid_token", "detail": "token expired"}).encode()
    headers = Headers(
        [
            ("Content-Type", "application/json"),
            ("WWW-Authenticate", 'Bearer error="invalid_token"'),
            ("Content-Length", str(len(body))),
        ]
    )
    return Response(http.HTTPStatus.UNAUTHORIZED.value, "Unauthorized", headers, body)


async def bomb(ws):
    try:
        await ws.send(b"\x00" * 10_000_000)
        await ws.wait_closed()
    finally:
        code = ws.close_code if ws.close_code is not None else 1006
        print(f"CLOSED {code} {ws.close_reason or ''}", flush=True)


async def silent(ws):
    # Stop reading from the socket: pings are never seen, so never answered.
    ws.transport.pause_reading()
    await asyncio.sleep(TIMEOUT)


async def main():
    mode = sys.argv[1]
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    asyncio.get_running_loop().call_later(TIMEOUT, os._exit, 3)
    kwargs = {"ping_interval": None}
    handler = echo
    if mode == "subproto":
        kwargs["subprotocols"] = ["superchat", "chat"]
    elif mode == "auth401":
        kwargs["process_request"] = refuse
    elif mode == "noping":
        handler = silent
    elif mode == "lean":
        kwargs["compression"] = None
        kwargs["extensions"] = [
            ServerPerMessageDeflateFactory(
                server_no_context_takeover=True,
                client_no_context_takeover=True,
                server_max_window_bits=10,
                client_max_window_bits=10,
            )
        ]
    elif mode == "plain":
        kwargs["compression"] = None
    elif mode == "bomb":
        handler = bomb
    elif mode != "echo":
        sys.exit(f"unknown mode {mode}")
    async with serve(handler, "127.0.0.1", port, **kwargs) as server:
        print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Future()


asyncio.run(main())
