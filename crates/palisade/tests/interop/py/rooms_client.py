"""A Python member of a palisade room, written from the room protocol's description in the
book's "Rooms" chapter only: plain `websockets` and the `json` module, no palisade code.

Usage: python rooms_client.py URL — joins the room `lobby` and prints one fact per line:

  JOINED <room> <user,user…>    the join's ok reply and the presence list it carried
  PRESENCE-JOIN <user>          another member joined
  MESSAGE <event> <from> <text> a publication in the room
  ERROR <id> <code>             an error reply (a private message to nobody)
  LEFT <room>                   the leave's ok reply
  CLOSED <code>                 the close frame the server sent back

A watchdog prints `TIMEOUT` and ends the process after TIMEOUT seconds.
"""

import asyncio
import json
import os
import sys

from websockets.asyncio.client import connect

SUBPROTOCOL = "palisade.json.v1"
TIMEOUT = 20


async def until_reply(ws, request_id):
    """Reads until the reply to `request_id`; prints the events that arrive meanwhile."""
    while True:
        message = json.loads(await ws.recv())
        if message.get("reply") == request_id:
            return message
        show(message)


def show(message):
    event, data = message.get("event"), message.get("data")
    if event == "presence.join":
        print(f"PRESENCE-JOIN {data['user']}", flush=True)
    elif event == "room.message":
        inner = data["data"]
        print(f"MESSAGE {data['event']} {inner['from']} {inner['text']}", flush=True)


async def scenario(url):
    async with connect(url, subprotocols=[SUBPROTOCOL]) as ws:
        await ws.send(json.dumps({"event": "room.join", "id": 1, "data": {"room": "lobby"}}))
        reply = await until_reply(ws, 1)
        assert reply["status"] == "ok", reply
        users = ",".join(sorted(p["user"] for p in reply["data"]["presence"]))
        print(f"JOINED {reply['data']['room']} {users}", flush=True)
        # Wait for a publication in the room.
        while True:
            message = json.loads(await ws.recv())
            show(message)
            if message.get("event") == "room.message":
                break
        dm = {"to": "nobody", "event": "dm", "data": {"text": "hello?"}}
        await ws.send(json.dumps({"event": "user.send", "id": 2, "data": dm}))
        reply = await until_reply(ws, 2)
        print(f"ERROR {reply['reply']} {reply['error']['code']}", flush=True)
        await ws.send(json.dumps({"event": "room.leave", "id": 3, "data": {"room": "lobby"}}))
        reply = await until_reply(ws, 3)
        print(f"LEFT {reply['data']['room']}", flush=True)
    print(f"CLOSED {ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else 1006}", flush=True)


async def watchdog():
    await asyncio.sleep(TIMEOUT)
    print("TIMEOUT", flush=True)
    os._exit(3)


async def main(url):
    asyncio.get_running_loop().create_task(watchdog())
    await scenario(url)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
