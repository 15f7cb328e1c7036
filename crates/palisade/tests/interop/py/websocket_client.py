"""Python `websocket-client` (the synchronous client) against palisade's server.

Usage: python websocket_client.py SCENARIO URL [ARGS...] — runs one scenario against a palisade
server on 127.0.0.1, prints what it observed, one fact per line, then exits. Every socket
operation has a timeout, and a watchdog ends the process after TIMEOUT seconds.

Scenarios:
  echo URL              send text and binary messages of several sizes; print `ECHO OK`, then
                        close with 1000 and print `CLOSED <code>` of the server's answer
  handshake URL [MODE]  connect as the library does by default, which sends
                        `Origin: http://HOST:PORT` of the URL (MODE `no-origin`: with
                        `suppress_origin=True`); print `OPEN`, or `STATUS <code> <body>` with
                        the body's lines joined by `|`
  big URL SIZE          send a binary message of SIZE bytes (over the server's limit), then
                        read until the server's close frame; print `CLOSED <code> <reason>`,
                        or `ERROR <exception>` if the connection broke first
"""

import os
import struct
import sys
import threading

import websocket

TIMEOUT = 60
SOCKET_TIMEOUT = 10


def echo(url):
    ws = websocket.create_connection(url, timeout=SOCKET_TIMEOUT)
    for size in [0, 1, 125, 126, 65_535, 65_536, 300_000]:
        text = "é" * (size // 2)
        ws.send(text)
        got = ws.recv()
        assert got == text, f"text of {size}: got {len(got)} characters"
        data = bytes([0xA5]) * size
        ws.send_binary(data)
        opcode, got = ws.recv_data()
        assert opcode == websocket.ABNF.OPCODE_BINARY and got == data, f"binary of {size}"
    print("ECHO OK", flush=True)
    ws.send_close(websocket.STATUS_NORMAL, b"done")
    # The server's close frame: 2 bytes of code, then its reason.
    opcode, payload = ws.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE, opcode
    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
    print(f"CLOSED {code}", flush=True)
    ws.shutdown()


def handshake(url, mode=None):
    try:
        ws = websocket.create_connection(
            url, timeout=SOCKET_TIMEOUT, suppress_origin=(mode == "no-origin")
        )
    except websocket.WebSocketBadStatusException as exc:
        body = (exc.resp_body or b"").decode("utf-8", "replace")
        print(f"STATUS {exc.status_code} {'|'.join(body.splitlines())}", flush=True)
        return
    print("OPEN", flush=True)
    ws.close()


def big(url, size):
    ws = websocket.create_connection(url, timeout=SOCKET_TIMEOUT)
    try:
        ws.send_binary(bytes(int(size)))
        while True:
            opcode, payload = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                print(f"CLOSED {code} {payload[2:].decode()}", flush=True)
                return
    except Exception as exc:  # noqa: BLE001 - what broke is the observation
        print(f"ERROR {type(exc).__name__}", flush=True)


def main(scenario, url, *args):
    if scenario == "echo":
        echo(url)
    elif scenario == "handshake":
        handshake(url, *args)
    elif scenario == "big":
        big(url, *args)
    else:
        sys.exit(f"unknown scenario {scenario}")


if __name__ == "__main__":
    watchdog = threading.Timer(TIMEOUT, lambda: (print("TIMEOUT", flush=True), os._exit(3)))
    watchdog.daemon = True
    watchdog.start()
    main(*sys.argv[1:])
