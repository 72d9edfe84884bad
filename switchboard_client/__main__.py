"""A small command line for Switchboard: ``python -m switchboard_client --help``.

    python -m switchboard_client signup alice wonderland      # prints a token
    export SWITCHBOARD_TOKEN=...                               # or --user/--password
    python -m switchboard_client conversations
    python -m switchboard_client direct bob                    # opens a direct chat
    python -m switchboard_client send 7 "hello"
    python -m switchboard_client follow --transport sse        # prints events

The server is ``--url`` or ``SWITCHBOARD_URL`` (default http://127.0.0.1:8080).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime

from switchboard_client.client import ORDER, Client
from switchboard_client.rest import Api, ApiError
from switchboard_client.transports import TransportClosed


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m switchboard_client",
                                     description="Talk to a Switchboard gateway.")
    parser.add_argument("--url", default=os.environ.get("SWITCHBOARD_URL",
                                                        "http://127.0.0.1:8080"))
    parser.add_argument("--token", default=os.environ.get("SWITCHBOARD_TOKEN"),
                        help="bearer token (default $SWITCHBOARD_TOKEN)")
    parser.add_argument("--user", help="log in with this username instead of a token")
    parser.add_argument("--password", default=os.environ.get("SWITCHBOARD_PASSWORD"))
    parser.add_argument("--json", action="store_true", help="print raw JSON")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("signup", "login"):
        p = sub.add_parser(name, help=f"{name}; prints the token")
        p.add_argument("username")
        p.add_argument("password")
        if name == "signup":
            p.add_argument("--display-name")
    sub.add_parser("conversations", help="list conversations with unread counts")
    p = sub.add_parser("direct", help="open (or find) the direct chat with a user")
    p.add_argument("username")
    p = sub.add_parser("group", help="create a group")
    p.add_argument("title")
    p.add_argument("usernames", nargs="*")
    p = sub.add_parser("history", help="print a conversation's latest messages")
    p.add_argument("conversation_id", type=int)
    p.add_argument("--limit", type=int, default=20)
    p = sub.add_parser("send", help="send a message (retried until acknowledged)")
    p.add_argument("conversation_id", type=int)
    p.add_argument("text")
    p.add_argument("--client-msg-id")
    p = sub.add_parser("follow", help="print events as they arrive")
    p.add_argument("--transport", default="auto", choices=["auto", *ORDER])
    p.add_argument("--count", type=int, default=0, help="stop after this many events")
    p.add_argument("--timeout", type=float, default=0, help="stop after this many seconds")
    return parser


def _api(args: argparse.Namespace) -> Api:
    api = Api(args.url, token=args.token)
    if args.user:
        if not args.password:
            raise SystemExit("--user needs --password (or $SWITCHBOARD_PASSWORD)")
        api.log_in(args.user, args.password)
    elif not api.token:
        raise SystemExit("not signed in: pass --token, set SWITCHBOARD_TOKEN, or --user")
    else:
        api.user = api.request("GET", "/v1/users/me")
    return api


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%H:%M:%S")


def _describe(event: dict) -> str:
    kind, data = event.get("type"), event.get("data", {})
    if kind == "message.created":
        return (f"[{_when(data['created_at'])}] #{data['conversation_id']} "
                f"user {data['sender_id']}: {data['text']}")
    if kind == "receipt":
        return f"#{data['conversation_id']}: user {data['user_id']} read up to {data['seq']}"
    if kind == "typing":
        return f"#{data['conversation_id']}: user {data['user_id']} is typing"
    if kind == "presence":
        return f"user {data['user_id']} is {'online' if data['online'] else 'offline'}"
    if kind == "reset":
        return "reset: the cursor was too old; resynchronise"
    return f"{kind}: {json.dumps(data, ensure_ascii=False)}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = sys.stdout
    try:
        if args.command in ("signup", "login"):
            api = Api(args.url)
            body = (api.sign_up(args.username, args.password, args.display_name)
                    if args.command == "signup" else api.log_in(args.username, args.password))
            print(json.dumps(body) if args.json else body["token"], file=out)
            return 0
        api = _api(args)
        if args.command == "conversations":
            for conv in api.conversations():
                if args.json:
                    print(json.dumps(conv, ensure_ascii=False), file=out)
                    continue
                title = conv["title"] or ", ".join(
                    m["username"] for m in conv["members"] if m["id"] != api.user_id)
                last = (conv["last_message"] or {}).get("text", "")
                print(f"{conv['id']:>6}  {title:<24} unread {conv['unread_count']:<4} {last}",
                      file=out)
        elif args.command == "direct":
            other = api.find_user(args.username)
            print(api.direct(other["id"])["id"], file=out)
        elif args.command == "group":
            ids = [api.find_user(name)["id"] for name in args.usernames]
            print(api.group(args.title, ids)["id"], file=out)
        elif args.command == "history":
            for message in api.messages(args.conversation_id, limit=args.limit):
                print(json.dumps(message, ensure_ascii=False) if args.json else
                      f"[{_when(message['created_at'])}] user {message['sender_id']}: "
                      f"{message['text']}", file=out)
        elif args.command == "send":
            with Client(api, transports=("longpoll",)) as client:
                message = client.send(args.conversation_id, args.text, args.client_msg_id)
            print(json.dumps(message, ensure_ascii=False) if args.json else message["id"],
                  file=out)
        elif args.command == "follow":
            return _follow(api, args)
        return 0
    except ApiError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _follow(api: Api, args: argparse.Namespace) -> int:
    transports = ORDER if args.transport == "auto" else (args.transport,)

    def announce(previous: str | None, name: str, why: str) -> None:
        print(f"# transport: {name}" + (f" (was {previous}, {why})" if previous else ""),
              file=sys.stderr, flush=True)

    seen = 0
    with Client(api, transports=transports, on_transport=announce) as client:
        try:
            for event in client.events(timeout=args.timeout or None):
                print(json.dumps(event, ensure_ascii=False) if args.json else _describe(event),
                      flush=True)
                seen += 1
                if args.count and seen >= args.count:
                    break
        except TransportClosed as err:
            print(f"error: {err.reason}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
