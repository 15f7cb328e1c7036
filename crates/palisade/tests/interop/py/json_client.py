"""A Python client of palisade's JSON wire format v1, written from the format's description only:
plain `websockets` and the `json` module, no palisade code.

Usage: python json_client.py json URL — runs the scenario against a palisade server whose
handler speaks `palisade.json.v1`, on one connection, and prints one fact per line:

  OPEN <subprotocol>                 the subprotocol the server selected
  EVENT echo <seq> <text>            an event answered by an event
  REPLY <id> ok <sum>                a request answered by an ok reply
  ERROR <id|null> <code> [<path>]    an error reply (null: the server could not tell which
                                     message was wrong)
  AT <line> <column>                 where the `malformed` error says the JSON broke
  NO-ECHO ok                         the `invalid_payload` reply leaves out the value sent
  SERVER-REQUEST <event>             the server asked the client something
  EVENT confirmed <answer>           the server's event carrying the client's answer
  CLOSED <code> [<reason>]           the close frame the server sent back

A watchdog prints `TIMEOUT` and ends the process after TIMEOUT seconds.
"""

import asyncio
import json
import os
import re
import sys

from websockets.asyncio.client import connect

SUBPROTOCOL = "palisade.json.v1"
TIMEOUT = 20


# ANCHOR: request
class JsonClient:
    """One connection: a reader task hands each reply to the request waiting for it, and
    everything else (events, the server's requests, error replies with `"reply": null`) to
    `inbox`."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 1
        self.pending = {}  # request id -> future of its reply
        self.inbox = asyncio.Queue()

    async def read(self):
        async for text in self.ws:
            message = json.loads(text)
            if message.get("reply") in self.pending:
                self.pending.pop(message["reply"]).set_result(message)
            else:
                await self.inbox.put(message)

    async def request(self, event, data):
        """Sends a request and returns its reply, ok or error: the one whose `reply` is our id."""
        request_id = self.next_id  # unique among our pending requests
        self.next_id += 1
        reply = asyncio.get_running_loop().create_future()
        self.pending[request_id] = reply
        try:
            await self.ws.send(json.dumps({"event": event, "id": request_id, "data": data}))
            return await asyncio.wait_for(reply, TIMEOUT)
        finally:
            self.pending.pop(request_id, None)
# ANCHOR_END: request

    async def emit(self, event, data):
        await self.ws.send(json.dumps({"event": event, "data": data}))

    async def next_message(self):
        return await asyncio.wait_for(self.inbox.get(), TIMEOUT)


# ANCHOR: error_reply
def print_error(reply):
    """Prints an error reply: the id of the request it answers (`null` when the server could
    not tell which message was wrong), the stable code, and the offending field, if named."""
    assert reply["status"] == "error"
    error = reply["error"]  # {"code", "message", and maybe "path" and "details"}
    line = f"ERROR {json.dumps(reply['reply'])} {error['code']}"
    if "path" in error:
        line += f" {error['path']}"
    print(line, flush=True)
# ANCHOR_END: error_reply


async def scenario(url):
    async with connect(url, subprotocols=[SUBPROTOCOL], ping_interval=None) as ws:
        print(f"OPEN {ws.subprotocol}", flush=True)
        client = JsonClient(ws)
        reader = asyncio.get_running_loop().create_task(client.read())

        # 1. An event, answered by an event.
        await client.emit("echo", {"seq": 1, "text": "hi"})
        event = await client.next_message()
        print(f"EVENT {event['event']} {event['data']['seq']} {event['data']['text']}", flush=True)

        # 2. A request, answered by an ok reply.
        reply = await client.request("add", {"a": 2, "b": 3})
        print(f"REPLY {reply['reply']} {reply['status']} {reply['data']['sum']}", flush=True)

        # 3. Not JSON: nobody can tell which message it was, so `"reply": null`.
        await ws.send('{"event": "add", "id": 9, "data": {"a": 1,')
        error = await client.next_message()
        print_error(error)
        at = re.search(r"line (\d+), column (\d+)", error["error"]["message"])
        print(f"AT {at[1]} {at[2]}" if at else f"AT - ({error['error']['message']})", flush=True)

        # 4. The wrong shape: the path names the field, the value sent is not repeated.
        reply = await client.request("add", {"a": "two-secret", "b": 3})
        print_error(reply)
        leaked = "two-secret" in json.dumps(reply)
        print(f"NO-ECHO {'leaked' if leaked else 'ok'}", flush=True)

        # 5. An event the server does not know.
        print_error(await client.request("shout", {"text": "hi"}))

        # 6. The application's own error code.
        print_error(await client.request("divide", {"a": 1, "b": 0}))

        # 7. The server asks the client; its event carries the answer.
        await client.emit("ask", {"question": "proceed?"})
        # ANCHOR: answer
        request = await client.next_message()  # {"event": "confirm", "id": 0, "data": {...}}
        print(f"SERVER-REQUEST {request['event']}", flush=True)
        answer = {"reply": request["id"], "status": "ok", "data": {"answer": "yes"}}
        await ws.send(json.dumps(answer))
        # ANCHOR_END: answer
        event = await client.next_message()
        print(f"EVENT {event['event']} {event['data']['answer']}", flush=True)

        # 8. A reply to a request the server never sent.
        await ws.send(json.dumps({"reply": 99, "status": "ok", "data": None}))
        print_error(await client.next_message())

        # 9. Goodbye.
        await ws.close(1000, "done")
        await asyncio.wait_for(reader, TIMEOUT)
        rcvd = ws.protocol.close_rcvd
        code, reason = (rcvd.code, rcvd.reason) if rcvd is not None else (1006, "")
        print(f"CLOSED {code} {reason}".rstrip(), flush=True)


async def watchdog():
    await asyncio.sleep(TIMEOUT)
    print("TIMEOUT", flush=True)
    os._exit(3)


async def main(name, url):
    if name != "json":
        raise SystemExit(f"unknown scenario {name}")
    asyncio.get_running_loop().create_task(watchdog())
    await scenario(url)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
