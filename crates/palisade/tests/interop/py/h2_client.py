"""A WebSocket-over-HTTP/2 client (RFC 8441) made of parts independent of palisade and hyper:
python-hyper's `h2` (the HTTP/2 state machine: SETTINGS_ENABLE_CONNECT_PROTOCOL, the
`:protocol` pseudo-header) and `wsproto`'s frame layer (masking, permessage-deflate) on the
CONNECT stream.

Usage: python h2_client.py SCENARIO HOST PORT PATH [ARGS...] — one scenario against a server on
127.0.0.1 over cleartext HTTP/2 (prior knowledge); prints what it observed, one fact per line.
A socket timeout ends it if the server goes quiet.

Scenarios:
  echo              print `SETTINGS enable_connect_protocol=<0|1>`, `OPEN <status>`; send text
                    and binary messages of several sizes (past the 64 KiB flow-control window)
                    and check the echoes; print `ECHO OK`; close with 1000 and print
                    `CLOSED <code>`
  deflate           the same, offering permessage-deflate; prints `EXT <the server's answer>`
                    after `OPEN`
  origin ORIGIN     send `origin: ORIGIN`; print `STATUS <status>` (or `OPEN 200`)
  close             send the text `4000 going`; print `CLOSED <code> <reason>` when the server
                    closes
"""

import socket
import sys

import h2.config
import h2.connection
import h2.events
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, TextMessage
from wsproto.extensions import PerMessageDeflate

TIMEOUT = 30


class Client:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.h2.initiate_connection()
        self.flush()
        self.stream = None
        self.ws = None
        self.messages = []
        self.closed = None
        self.response = None
        self.settings_seen = False

    def flush(self):
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def pump(self):
        """Reads once from the socket and handles every event it brings."""
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("the server closed the connection")
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.RemoteSettingsChanged):
                self.settings_seen = True
            elif isinstance(event, h2.events.ResponseReceived):
                self.response = dict(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                # Flow control: the window is given back as the data is consumed.
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                # After the close handshake, only the END_STREAM's empty DATA may follow.
                if self.ws is not None and event.data and self.closed is None:
                    self.ws.receive_data(event.data)
                    self.ws_events()
            elif isinstance(event, h2.events.StreamEnded) and self.ws is not None:
                if self.closed is None:
                    self.ws.receive_data(None)
                    self.ws_events()
        self.flush()

    def ws_events(self):
        for event in self.ws.events():
            if isinstance(event, (TextMessage, BytesMessage)):
                if self.messages and not self.messages[-1][1]:
                    data, _ = self.messages.pop()
                    self.messages.append((data + event.data, event.message_finished))
                else:
                    self.messages.append((event.data, event.message_finished))
            elif isinstance(event, CloseConnection):
                self.closed = (event.code, event.reason or "")
                if self.ws.state.name == "REMOTE_CLOSING":
                    self.send_ws(event.response())

    def wait_settings(self):
        # RFC 8441 §3: the server says it takes extended CONNECT in its SETTINGS, its first
        # frame (RFC 9113 §3.4).
        while not self.settings_seen:
            self.pump()
        enabled = self.h2.remote_settings.enable_connect_protocol
        print(f"SETTINGS enable_connect_protocol={enabled}", flush=True)

    def connect(self, path, authority, extra=()):
        self.stream = self.h2.get_next_available_stream_id()
        headers = [
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "http"),
            (":path", path),
            (":authority", authority),
            ("sec-websocket-version", "13"),
            *extra,
        ]
        self.h2.send_headers(self.stream, headers)
        self.flush()
        while self.response is None:
            self.pump()
        return int(self.response[b":status"])

    def send_ws(self, event):
        data = self.ws.send(event)
        while data:
            window = min(
                self.h2.local_flow_control_window(self.stream), self.h2.max_outbound_frame_size
            )
            if window == 0:
                self.pump()
                continue
            self.h2.send_data(self.stream, data[:window])
            data = data[window:]
            self.flush()

    def recv(self):
        while not (self.messages and self.messages[0][1]):
            if self.closed is not None:
                raise EOFError(f"closed with {self.closed}")
            self.pump()
        return self.messages.pop(0)[0]


def echo(client):
    for size in (0, 1, 125, 126, 65535, 65536, 300000):
        text = "é" * (size // 2)
        client.send_ws(TextMessage(data=text))
        assert client.recv() == text, size
        data = bytes([size % 251]) * size
        client.send_ws(BytesMessage(data=data))
        assert client.recv() == data, size
    print("ECHO OK", flush=True)
    client.send_ws(CloseConnection(code=1000, reason="done"))
    while client.closed is None:
        client.pump()
    print(f"CLOSED {client.closed[0]}", flush=True)


def main(scenario, host, port, path, *args):
    client = Client(host, port)
    client.wait_settings()
    authority = f"{host}:{port}"
    extra = []
    if scenario == "origin":
        extra.append(("origin", args[0]))
    deflate = PerMessageDeflate()
    if scenario == "deflate":
        offer = deflate.offer()
        value = deflate.name if offer is True else f"{deflate.name}; {offer}"
        extra.append(("sec-websocket-extensions", value))
    status = client.connect(path, authority, extra)
    if status != 200:
        print(f"STATUS {status}", flush=True)
        return
    print(f"OPEN {status}", flush=True)
    extensions = []
    if scenario == "deflate":
        answer = client.response.get(b"sec-websocket-extensions", b"").decode()
        print(f"EXT {answer}", flush=True)
        deflate.finalize(answer)
        extensions.append(deflate)
    # The handshake was HTTP/2's; wsproto takes over as on an open connection.
    client.ws = Connection(ConnectionType.CLIENT, extensions=extensions)
    if scenario in ("echo", "deflate"):
        echo(client)
    elif scenario == "close":
        client.send_ws(TextMessage(data="4000 going"))
        while client.closed is None:
            client.pump()
        print(f"CLOSED {client.closed[0]} {client.closed[1]}".rstrip(), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
