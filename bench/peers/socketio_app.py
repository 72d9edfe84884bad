"""python-socketio on gevent: the Python stack a user would pick instead of Switchboard.

A tiny app against python-socketio's public API: a client connects with
``auth={"rooms": [...]}`` and joins those rooms; ``send {to, text}`` emits ``msg`` to
room ``to`` and acknowledges. Memory manager, one worker (Socket.IO's polling needs
sticky sessions across workers).

    gunicorn -k gevent -w 1 --worker-connections 12000 -b 127.0.0.1:PORT \\
        bench.peers.socketio_app:app
"""

from __future__ import annotations

import socketio

sio = socketio.Server(async_mode="gevent", cors_allowed_origins="*",
                      ping_interval=25, ping_timeout=20)
app = socketio.WSGIApp(sio)


@sio.event
def connect(sid, environ, auth):
    for room in (auth or {}).get("rooms", []):
        sio.enter_room(sid, room)


@sio.event
def send(sid, data):
    sio.emit("msg", data["text"], to=data["to"])
    return True
