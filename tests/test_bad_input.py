"""Bad input: every malformed, mistyped, missing, oversize or unknown thing a client can
send gets a clear 4xx JSON error — never a 500 — and leaves nothing half-written.

In-process (Flask test client on a temp SQLite): each case snapshots the whole state
(users, sessions, friends, conversations, memberships, messages, read marks and every
user's event-log tip), sends one bad request, checks the error, and checks that the
snapshot did not move.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from sqlalchemy import func, select

from storage import models
from storage.db import db

PASSWORD = "password123"
MAX_BODY = 1024 * 1024  # Settings.max_body_bytes default
_UNSET = object()


# --- the world every case runs against ----------------------------------------------------

@dataclasses.dataclass
class World:
    app: Any
    client: Any
    users: dict[str, dict]  # name -> {"id", "token", "headers"}
    group: int  # alice (admin), bob (member)
    direct: int  # alice <-> bob
    other_group: int  # carol (admin), dave: alice and bob are not members
    msg: str  # a message id in `group`
    other_msg: str  # a message id in `other_group`

    def h(self, name: str) -> dict[str, str]:
        return self.users[name]["headers"]

    def id(self, name: str) -> int:
        return self.users[name]["id"]

    def fmt(self, template: str) -> str:
        return template.format(
            group=self.group, direct=self.direct, other_group=self.other_group,
            msg=self.msg, other_msg=self.other_msg,
            **{name: u["id"] for name, u in self.users.items()})


def _sign_up(client, name: str) -> dict:
    r = client.post("/v1/users", json={"username": name, "password": PASSWORD})
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    return {"id": body["user"]["id"], "token": body["token"],
            "headers": {"Authorization": f"Bearer {body['token']}"}}


def _ok(response, status: int = 200) -> dict:
    assert response.status_code == status, response.get_json()
    return response.get_json()


@pytest.fixture
def world(app, client) -> World:
    users = {name: _sign_up(client, name) for name in ("alice", "bob", "carol", "dave")}
    hdr = {n: u["headers"] for n, u in users.items()}
    group = _ok(client.post("/v1/conversations", headers=hdr["alice"], json={
        "kind": "group", "title": "team", "member_ids": [users["bob"]["id"]]}), 201)["id"]
    direct = _ok(client.post("/v1/conversations", headers=hdr["alice"], json={
        "kind": "direct", "user_id": users["bob"]["id"]}), 201)["id"]
    other = _ok(client.post("/v1/conversations", headers=hdr["carol"], json={
        "kind": "group", "title": "elsewhere", "member_ids": [users["dave"]["id"]]}), 201)["id"]
    msg = _ok(client.post(f"/v1/conversations/{group}/messages", headers=hdr["alice"],
                          json={"client_msg_id": "m1", "text": "hello"}), 201)["id"]
    _ok(client.post(f"/v1/conversations/{group}/messages", headers=hdr["bob"],
                    json={"client_msg_id": "m2", "text": "hi"}), 201)
    other_msg = _ok(client.post(f"/v1/conversations/{other}/messages", headers=hdr["carol"],
                                json={"client_msg_id": "m3", "text": "secret"}), 201)["id"]
    return World(app, client, users, group, direct, other, msg, other_msg)


# --- state snapshot -------------------------------------------------------------------------

_TABLES = {
    "users": models.User, "sessions": models.AuthSession,
    "friend_requests": models.FriendRequest, "friendships": models.Friendship,
    "conversations": models.Conversation, "memberships": models.Membership,
}


def _rows(model) -> list[tuple]:
    columns = [c.key for c in model.__table__.columns]
    objs = db.session.scalars(select(model)).all()
    return sorted(tuple(getattr(o, c) for c in columns) for o in objs)


def counts(app) -> dict[str, int]:
    """Row counts of every table, messages and read marks included (via HistoryStore)."""
    history = app.extensions["switchboard"].history
    with app.app_context():
        result = {name: db.session.scalar(select(func.count()).select_from(model))
                  for name, model in _TABLES.items()}
        conversation_ids = db.session.scalars(select(models.Conversation.id)).all()
    result["messages"] = sum(len(history.page(c, limit=10_000)) for c in conversation_ids)
    result["read_marks"] = sum(len(history.watermarks(c)) for c in conversation_ids)
    return result


def snapshot(app) -> dict[str, Any]:
    """Counts plus full contents, and the tip of every user's event log."""
    svc = app.extensions["switchboard"]
    with app.app_context():
        state: dict[str, Any] = {name: _rows(model) for name, model in _TABLES.items()}
        conversation_ids = db.session.scalars(select(models.Conversation.id)).all()
        user_ids = db.session.scalars(select(models.User.id)).all()
    state["counts"] = counts(app)
    state["messages"] = {c: [m.to_json() for m in svc.history.page(c, limit=10_000)]
                         for c in conversation_ids}
    state["read_marks"] = {c: sorted(svc.history.watermarks(c).items())
                           for c in conversation_ids}
    # An event announced for a write that was then refused is a half-applied write too.
    state["log_tips"] = {u: svc.broker.read(u, None, 0).cursor for u in user_ids}
    return state


def assert_error(response, status: int | None = None, code: str | None = None) -> dict:
    """A clear JSON error: 4xx, ``{"error": {"code": str, "message": str}}``."""
    assert response.status_code < 500, (response.status_code, response.get_data(as_text=True))
    assert 400 <= response.status_code < 500, (response.status_code, response.get_json())
    if status is not None:
        assert response.status_code == status, response.get_json()
    assert response.is_json, response.get_data(as_text=True)[:200]
    body = response.get_json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error.get("code"), str) and error["code"], body
    assert isinstance(error.get("message"), str) and error["message"], body
    if code is not None:
        assert error["code"] == code, body
    return error


# --- the cases ------------------------------------------------------------------------------

@dataclasses.dataclass
class Case:
    id: str
    method: str
    path: str  # formatted with World.fmt
    json: Any = _UNSET
    data: str | bytes | None = None  # raw body (sent as application/json)
    query: dict[str, str] | None = None
    status: int = 400
    code: str | None = None
    user: str | None = "alice"  # whose token; None: anonymous


def C(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 - reads like a table row
    case = Case(*args, **kwargs)
    return pytest.param(case, id=case.id)


MSGS = "/v1/conversations/{group}/messages"
READ = "/v1/conversations/{group}/read"
MEMBERS = "/v1/conversations/{group}/members"
CONVS = "/v1/conversations"

MALFORMED = [
    ("unclosed", "{"), ("truncated", '{"user_id": '), ("single_quotes", "{'user_id': 2}"),
    ("trailing_comma", '{"user_id": 2,}'), ("bare_word", "nul"), ("empty", ""),
    ("whitespace", "   "), ("invalid_utf8", b'{"user_id": "\xff\xfe"}'),
    ("deep_nesting", "[" * 100_000), ("deep_object", '{"a":' * 50_000),
    ("lone_surrogate", '{"username": "\\ud800abc", "password": "password123"}'),
    ("lone_surrogate_utf16", '{"username": "\\ud800abc", "password": "password123"}'
     .encode("utf-16-le")),
    ("lone_surrogate_utf32", '{"text": "\\udfff"}'.encode("utf-32")),
    ("lone_surrogate_bytes", b'{"text": "\xed\xa0\x80"}'),
    ("comment", '{"user_id": 2 /* hi */}'),
]
NON_OBJECTS = [("array", "[]"), ("string", '"x"'), ("number", "1"), ("null", "null"),
               ("true", "true"), ("array_of_object", '[{"user_id": 2}]')]
JSON_ROUTES = [("POST", "/v1/users"), ("POST", "/v1/sessions"), ("PATCH", "/v1/users/me"),
               ("POST", "/v1/friends"), ("POST", CONVS), ("POST", MEMBERS),
               ("POST", MSGS), ("POST", READ)]

BODY_CASES = [
    *(C(f"malformed-{name}-{method}{path}", method, path, data=raw, code="invalid_json")
      for name, raw in MALFORMED for method, path in JSON_ROUTES
      if name in ("unclosed", "empty", "deep_nesting", "invalid_utf8") or path == MSGS),
    *(C(f"nonobject-{name}-{method}{path}", method, path, data=raw, code="invalid_json")
      for name, raw in NON_OBJECTS for method, path in JSON_ROUTES),

    # sign up
    *(C(f"signup-username-{label}", "POST", "/v1/users",
        {"username": value, "password": PASSWORD}, user=None)
      for label, value in [("int", 123), ("true", True), ("list", ["erin"]),
                           ("object", {"a": 1}), ("float", 1.5), ("empty", ""),
                           ("spaces", "   "), ("too_short", "ab"), ("too_long", "e" * 33),
                           ("space_inside", "er in"), ("bang", "erin!"), ("accent", "érin"),
                           ("dash", "er-in"), ("nul", "erin\x00"), ("emoji", "erin😀")]),
    C("signup-username-missing", "POST", "/v1/users", {"password": PASSWORD},
      code="missing_field", user=None),
    C("signup-username-null", "POST", "/v1/users", {"username": None, "password": PASSWORD},
      code="missing_field", user=None),
    *(C(f"signup-password-{label}", "POST", "/v1/users",
        {"username": "erin", "password": value}, user=None)
      for label, value in [("short", "1234567"), ("empty", ""), ("too_long", "p" * 257),
                           ("int", 12345678), ("true", True), ("list", [PASSWORD])]),
    C("signup-password-missing", "POST", "/v1/users", {"username": "erin"},
      code="missing_field", user=None),
    *(C(f"signup-display_name-{label}", "POST", "/v1/users",
        {"username": "erin", "password": PASSWORD, "display_name": value}, user=None)
      for label, value in [("int", 5), ("false", False), ("whitespace", "   "),
                           ("too_long", "d" * 65), ("object", {"x": "y"})]),
    C("signup-duplicate", "POST", "/v1/users", {"username": "bob", "password": PASSWORD},
      status=409, code="username_taken", user=None),
    C("signup-duplicate-case", "POST", "/v1/users", {"username": "BoB", "password": PASSWORD},
      status=409, code="username_taken", user=None),

    # log in
    C("login-wrong-password", "POST", "/v1/sessions",
      {"username": "bob", "password": "wrongpassword"}, status=401, user=None),
    C("login-unknown-user", "POST", "/v1/sessions",
      {"username": "nobody", "password": PASSWORD}, status=401, user=None),
    C("login-username-int", "POST", "/v1/sessions", {"username": 1, "password": PASSWORD},
      user=None),
    C("login-password-null", "POST", "/v1/sessions", {"username": "bob", "password": None},
      code="missing_field", user=None),

    # profile
    *(C(f"patch-me-{label}", "PATCH", "/v1/users/me", body)
      for label, body in [
          ("display_name-int", {"display_name": 1}),
          ("display_name-empty", {"display_name": "  "}),
          ("push_previews-string", {"push_previews": "yes"}),
          ("push_previews-int", {"push_previews": 1}),
          ("password-short", {"password": "short", "current_password": PASSWORD}),
          ("password-int", {"password": 123456789, "current_password": PASSWORD}),
          ("password-no-current", {"password": "newpassword1"}),
          ("unknown-field", {"display_name": "Al", "is_admin": True}),
          ("unknown-with-password", {"password": "newpassword1",
                                     "current_password": PASSWORD, "role": "admin"}),
      ]),
    C("patch-me-wrong-current-password", "PATCH", "/v1/users/me",
      {"password": "newpassword1", "current_password": "not-it-at-all"}, status=401),

    # friends
    *(C(f"friend-user_id-{label}", "POST", "/v1/friends", {"user_id": value})
      for label, value in [("string", "{bob}"), ("true", True), ("false", False),
                           ("float", 2.5), ("float_whole", 2.0), ("object", {"id": 2}),
                           ("list", [2]), ("zero", 0), ("negative", -1), ("huge", 2**63)]),
    C("friend-user_id-NaN", "POST", "/v1/friends", data='{"user_id": NaN}'),
    C("friend-user_id-missing", "POST", "/v1/friends", {}, code="missing_field"),
    C("friend-user_id-null", "POST", "/v1/friends", {"user_id": None}, code="missing_field"),
    C("friend-self", "POST", "/v1/friends", {"user_id": "@alice"}),
    C("friend-unknown", "POST", "/v1/friends", {"user_id": 999_999}, status=404),

    # conversations
    *(C(f"conv-kind-{label}", "POST", CONVS, {"kind": value, "user_id": "@bob"})
      for label, value in [("int", 1), ("unknown", "channel"), ("upper", "DIRECT"),
                           ("empty", ""), ("list", ["direct"]), ("long", "directdirect")]),
    C("conv-kind-missing", "POST", CONVS, {"user_id": "@bob"}, code="missing_field"),
    *(C(f"direct-user_id-{label}", "POST", CONVS, {"kind": "direct", "user_id": value})
      for label, value in [("string", "{carol}"), ("true", True), ("float", 3.0),
                           ("list", ["{carol}"]), ("negative", -3)]),
    C("direct-user_id-missing", "POST", CONVS, {"kind": "direct"}, code="missing_field"),
    C("direct-self", "POST", CONVS, {"kind": "direct", "user_id": "@alice"}),
    C("direct-unknown-user", "POST", CONVS, {"kind": "direct", "user_id": 999_999},
      status=404),
    *(C(f"group-title-{label}", "POST", CONVS, {"kind": "group", "title": value,
                                                "member_ids": ["@bob"]})
      for label, value in [("empty", ""), ("whitespace", " \t\n"), ("int", 5),
                           ("too_long", "t" * 201), ("nul", "a\x00b"), ("object", {})]),
    C("group-title-missing", "POST", CONVS, {"kind": "group", "member_ids": []},
      code="missing_field"),
    *(C(f"group-member_ids-{label}", "POST", CONVS, {"kind": "group", "title": "t",
                                                     "member_ids": value})
      for label, value in [("string", "2,3"), ("bools", [True]), ("floats", [2.5]),
                           ("strings", ["2"]), ("zero", [0]), ("negative", [-1]),
                           ("object", {"a": 1}), ("nested", [["@bob"]]), ("int", 2),
                           ("nulls", [None])]),
    C("group-unknown-member", "POST", CONVS,
      {"kind": "group", "title": "t", "member_ids": ["@bob", 999_999]}, status=404),

    # members
    *(C(f"add-member-user_id-{label}", "POST", MEMBERS, {"user_id": value})
      for label, value in [("string", "{carol}"), ("true", True), ("float", 1.5),
                           ("null", None), ("list", ["{carol}"])]),
    C("add-member-missing", "POST", MEMBERS, {}, code="missing_field"),
    C("add-member-unknown-user", "POST", MEMBERS, {"user_id": 999_999}, status=404),
    C("add-member-to-direct", "POST", "/v1/conversations/{direct}/members",
      {"user_id": "@carol"}, status=422, code="not_a_group"),
    C("add-member-non-admin", "POST", MEMBERS, {"user_id": "@carol"}, status=403,
      user="bob"),
    C("add-member-unknown-conversation", "POST", "/v1/conversations/999999/members",
      {"user_id": "@carol"}, status=404),
    C("remove-member-non-admin", "DELETE", "/v1/conversations/{group}/members/{alice}",
      status=403, user="bob"),
    C("remove-member-not-in-group", "DELETE", "/v1/conversations/{group}/members/{carol}",
      status=404),
    C("remove-member-unknown-user", "DELETE", "/v1/conversations/{group}/members/999999",
      status=404),
    C("remove-member-huge-id", "DELETE",
      "/v1/conversations/{group}/members/99999999999999999999", status=404),
    C("leave-direct", "DELETE", "/v1/conversations/{direct}/members/{alice}", status=422),
    C("remove-from-direct", "DELETE", "/v1/conversations/{direct}/members/{bob}",
      status=422),

    # send
    *(C(f"send-text-{label}", "POST", MSGS, {"client_msg_id": "new1", "text": value})
      for label, value in [("empty", ""), ("space", " "), ("whitespace", " \n\t\r "),
                           ("too_long", "x" * 100_001), ("int", 5), ("list", ["hi"]),
                           ("object", {"a": 1}), ("true", True), ("nul", "hi\x00")]),
    C("send-text-missing", "POST", MSGS, {"client_msg_id": "new1"}, code="missing_field"),
    C("send-text-null", "POST", MSGS, {"client_msg_id": "new1", "text": None},
      code="missing_field"),
    *(C(f"send-client_msg_id-{label}", "POST", MSGS, {"client_msg_id": value, "text": "hi"})
      for label, value in [("empty", ""), ("too_long", "c" * 65), ("space", "a b"),
                           ("slash", "a/b"), ("int", 5), ("true", True), ("list", ["a"])]),
    C("send-client_msg_id-missing", "POST", MSGS, {"text": "hi"}, code="missing_field"),
    C("send-client_msg_id-reused-elsewhere", "POST", "/v1/conversations/{direct}/messages",
      {"client_msg_id": "m1", "text": "hello"}, status=409),
    C("send-unknown-conversation", "POST", "/v1/conversations/999999/messages",
      {"client_msg_id": "new1", "text": "hi"}, status=404),

    # read marks
    *(C(f"read-message_id-{label}", "POST", READ, {"message_id": value})
      for label, value in [("true", True), ("float", 1.5), ("word", "abc"), ("negative", "-1"),
                           ("negative_int", -1), ("object", {}), ("list", []),
                           ("too_big", "99999999999999999999"), ("huge_int", 2**64),
                           ("space", " 1"), ("superscript", "\u00b2")]),
    C("read-message_id-missing", "POST", READ, {}),
    C("read-unknown-message", "POST", READ, {"message_id": "123456789"}, status=404),
    C("read-message-of-other-conversation", "POST", READ, {"message_id": "{other_msg}"},
      status=404),
    C("read-unknown-conversation", "POST", "/v1/conversations/999999/read",
      {"message_id": "{msg}"}, status=404),

    # oversize bodies (the limit is on the body, before any parsing)
    *(C(f"oversize-{method}{path}", method, path, data=b"x" * (MAX_BODY + 1), status=413,
        code="body_too_large") for method, path in JSON_ROUTES),
    C("oversize-valid-json-send", "POST", MSGS,
      data=json.dumps({"client_msg_id": "big", "text": "y" * (MAX_BODY + 1)}),
      status=413, code="body_too_large"),
]

PAGE = "/v1/conversations/{group}/messages"
QUERY_CASES = [
    *(C(f"page-limit-{label}", "GET", PAGE, query={"limit": value})
      for label, value in [("zero", "0"), ("negative", "-1"), ("too_large", "101"),
                           ("text", "ten"), ("float", "1.5"), ("nan", "nan"),
                           ("exponent", "1e2"), ("superscript", "\u00b2"),
                           ("huge", "9" * 30), ("space", " 5")]),
    *(C(f"page-{anchor}-{label}", "GET", PAGE, query={anchor: value})
      for anchor in ("before", "after", "around")
      for label, value in [("text", "abc"), ("negative", "-1"), ("float", "1.5"),
                           ("superscript", "\u00b2"), ("huge", "99999999999999999999")]),
    C("page-two-anchors", "GET", PAGE, query={"before": "{msg}", "after": "{msg}"}),
    C("page-three-anchors", "GET", PAGE,
      query={"before": "{msg}", "after": "{msg}", "around": "{msg}"}),
    *(C(f"page-unknown-{anchor}", "GET", PAGE, query={anchor: "123456789"}, status=404)
      for anchor in ("before", "after", "around")),
    *(C(f"page-{anchor}-from-other-conversation", "GET", PAGE,
        query={anchor: "{other_msg}"}, status=404) for anchor in ("before", "after", "around")),
    C("page-unknown-conversation", "GET", "/v1/conversations/999999/messages", status=404),

    *(C(f"events-wait-{label}", "GET", "/v1/events", query={"wait": value})
      for label, value in [("negative", "-1"), ("too_large", "26"), ("nan", "nan"),
                           ("inf", "inf"), ("text", "soon"), ("comma", "1,5"),
                           ("huge", "1e400")]),
    *(C(f"events-limit-{label}", "GET", "/v1/events", query={"limit": value})
      for label, value in [("zero", "0"), ("negative", "-1"), ("too_large", "501"),
                           ("text", "all"), ("float", "1.5")]),
    *(C(f"events-own-prefix-{label}", "GET", "/v1/events", query={"own_prefix": value,
                                                                     "wait": "1"})
      for label, value in [("space", "tab 7"), ("too_long", "a" * 33), ("slash", "a/b"),
                           ("unicode", "t\u00e4b")]),
    *(C(f"events-cursor-{label}", "GET", "/v1/events", query={"cursor": value},
        code="invalid_cursor")
      for label, value in [("garbage", "garbage"), ("colon", ":"), ("no_offset", "abc:"),
                           ("no_epoch", ":5"), ("negative", "abc:-1"),
                           ("bad_epoch", "ab$c:1"), ("too_long", "a" * 100 + ":1"),
                           ("float", "abc:1.5"), ("spaces", "ab c:1")]),

    *(C(f"presence-{label}", "GET", "/v1/presence", query=query)
      for label, query in [("missing", {}), ("empty", {"user_ids": ""}),
                           ("commas", {"user_ids": ",,"}), ("word", {"user_ids": "a"}),
                           ("mixed", {"user_ids": "1,a"}), ("negative", {"user_ids": "-1"}),
                           ("float", {"user_ids": "1.5"}),
                           ("superscript", {"user_ids": "\u00b2"}),
                           ("too_many", {"user_ids": ",".join(map(str, range(1, 202)))})]),

    C("find-user-missing", "GET", "/v1/users", code="missing_parameter"),
    C("find-user-unknown", "GET", "/v1/users", query={"username": "nobody"}, status=404),
    C("get-user-unknown", "GET", "/v1/users/999999", status=404),
    C("get-user-huge", "GET", "/v1/users/99999999999999999999", status=404),
    C("get-conversation-unknown", "GET", "/v1/conversations/999999", status=404),
    C("get-conversation-huge", "GET", "/v1/conversations/99999999999999999999", status=404),
    C("get-conversation-not-an-int", "GET", "/v1/conversations/abc", status=404),
    C("unfriend-unknown", "DELETE", "/v1/friends/999999", status=404),
    C("unfriend-huge", "DELETE", "/v1/friends/99999999999999999999", status=404),
    C("typing-unknown-conversation", "POST", "/v1/conversations/999999/typing", status=404),
]


def _send(w: World, case: Case):
    def fill(value: Any) -> Any:
        # "@bob" -> bob's id as an integer; "{bob}" -> as text (formatted like paths).
        if isinstance(value, str) and value.startswith("@") and value[1:] in w.users:
            return w.id(value[1:])
        if isinstance(value, str):
            return w.fmt(value)
        if isinstance(value, list):
            return [fill(v) for v in value]
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value

    kwargs: dict[str, Any] = {}
    if case.user is not None:
        kwargs["headers"] = w.h(case.user)
    if case.query is not None:
        kwargs["query_string"] = {k: w.fmt(v) for k, v in case.query.items()}
    if case.data is not None:
        kwargs["data"] = case.data
        kwargs["content_type"] = "application/json"
    elif case.json is not _UNSET:
        kwargs["json"] = fill(case.json)
    return w.client.open(w.fmt(case.path), method=case.method, **kwargs)


@pytest.mark.parametrize("case", [*BODY_CASES, *QUERY_CASES])
def test_rejected_with_clear_error_and_nothing_written(world: World, case: Case) -> None:
    before = snapshot(world.app)
    response = _send(world, case)
    assert_error(response, case.status, case.code)
    assert snapshot(world.app) == before


def test_cursor_with_non_ascii_digit_is_rejected(world: World) -> None:
    response = world.client.get("/v1/events", query_string={"cursor": "abc:\u00b2"},
                                headers=world.h("alice"))
    assert_error(response, 400, "invalid_cursor")


# --- cursors the server can parse but could not have issued ---------------------------------

def test_cursor_ahead_of_the_log_is_refused(world: World) -> None:
    tip = _ok(world.client.get("/v1/events", headers=world.h("alice")))["cursor"]
    epoch, _, offset = tip.partition(":")
    for ahead in (f"{epoch}:{int(offset) + 1}", f"{epoch}:{int(offset) + 10**6}",
                  f"{epoch}:{'9' * 30}"):
        response = world.client.get("/v1/events", query_string={"cursor": ahead},
                                    headers=world.h("alice"))
        assert_error(response, 400, "invalid_cursor")
        stream = world.client.get("/v1/events/stream", query_string={"cursor": ahead},
                                  headers=world.h("alice"))
        assert_error(stream, 400, "invalid_cursor")
    # The tip itself is fine and answers with no events.
    assert _ok(world.client.get("/v1/events", query_string={"cursor": tip},
                                headers=world.h("alice")))["events"] == []


def test_cursor_of_another_epoch_is_a_reset_not_an_error(world: World) -> None:
    body = _ok(world.client.get("/v1/events", query_string={"cursor": "0ther-epoch:3"},
                                headers=world.h("alice")))
    assert [e["type"] for e in body["events"]] == ["reset"]


# --- boundaries that must succeed -----------------------------------------------------------

def test_text_of_exactly_the_limit_is_stored_once(world: World) -> None:
    before = counts(world.app)
    text = "x" * 100_000
    body = _ok(world.client.post(f"/v1/conversations/{world.group}/messages",
                                 headers=world.h("alice"),
                                 json={"client_msg_id": "limit", "text": text}), 201)
    assert body["text"] == text
    after = counts(world.app)
    assert after["messages"] == before["messages"] + 1
    page = _ok(world.client.get(f"/v1/conversations/{world.group}/messages",
                                query_string={"limit": 1}, headers=world.h("bob")))
    assert page["messages"][0]["text"] == text


def test_text_limit_counts_characters_not_bytes(world: World) -> None:
    text = "é" * 100_000  # 200,000 bytes of UTF-8, 100,000 characters: allowed
    _ok(world.client.post(f"/v1/conversations/{world.group}/messages",
                          headers=world.h("alice"),
                          json={"client_msg_id": "accents", "text": text}), 201)
    response = world.client.post(f"/v1/conversations/{world.group}/messages",
                                 headers=world.h("alice"),
                                 json={"client_msg_id": "accents2", "text": text + "é"})
    assert_error(response, 400, "too_long")


# --- group size -----------------------------------------------------------------------------

def _bulk_users(app, n: int) -> list[int]:
    with app.app_context():
        users = [models.User(username=f"bulk{i}", display_name=f"bulk{i}",
                             password_hash="scrypt$4$00$00") for i in range(n)]
        db.session.add_all(users)
        db.session.commit()
        return [u.id for u in users]


def test_creating_a_group_of_101_is_refused(world: World) -> None:
    others = _bulk_users(world.app, 100)
    before = snapshot(world.app)
    response = world.client.post(CONVS, headers=world.h("alice"), json={
        "kind": "group", "title": "too big", "member_ids": others})
    assert_error(response, 422, "group_full")
    assert snapshot(world.app) == before
    # 100 members (me + 99) is the cap, and fits.
    created = _ok(world.client.post(CONVS, headers=world.h("alice"), json={
        "kind": "group", "title": "full", "member_ids": others[:99]}), 201)
    assert len(created["members"]) == 100


def test_adding_the_101st_member_is_refused(world: World) -> None:
    others = _bulk_users(world.app, 100)
    group = _ok(world.client.post(CONVS, headers=world.h("alice"), json={
        "kind": "group", "title": "full", "member_ids": others[:99]}), 201)["id"]
    before = snapshot(world.app)
    response = world.client.post(f"/v1/conversations/{group}/members",
                                 headers=world.h("alice"), json={"user_id": others[99]})
    assert_error(response, 422, "group_full")
    assert snapshot(world.app) == before
    # Re-adding someone already in a full group is not a 101st member.
    again = world.client.post(f"/v1/conversations/{group}/members",
                              headers=world.h("alice"), json={"user_id": others[0]})
    assert again.status_code == 200
    # Once someone leaves, there is room again.
    assert world.client.delete(f"/v1/conversations/{group}/members/{others[0]}",
                               headers=world.h("alice")).status_code == 204
    assert world.client.post(f"/v1/conversations/{group}/members", headers=world.h("alice"),
                             json={"user_id": others[99]}).status_code == 201


# --- duplicate sign-up ----------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["erin", "ERIN", "Erin", "eRiN"])
def test_duplicate_sign_up_in_any_case(world: World, variant: str) -> None:
    _ok(world.client.post("/v1/users", json={"username": "erin", "password": PASSWORD}), 201)
    before = snapshot(world.app)
    response = world.client.post("/v1/users", json={"username": variant,
                                                     "password": "otherpassword"})
    assert_error(response, 409, "username_taken")
    assert snapshot(world.app) == before
    # The first account's password still works; the second one's never did.
    assert world.client.post("/v1/sessions", json={
        "username": "erin", "password": PASSWORD}).status_code == 201
    assert world.client.post("/v1/sessions", json={
        "username": "erin", "password": "otherpassword"}).status_code == 401


# --- a rejected PATCH changes nothing, not even the fields that were valid ------------------

def test_rejected_profile_update_applies_no_part(world: World) -> None:
    before = snapshot(world.app)
    response = world.client.patch("/v1/users/me", headers=world.h("alice"), json={
        "display_name": "Changed", "push_previews": False, "password": "newpassword1",
        "current_password": PASSWORD, "nope": 1})
    assert_error(response, 400, "unknown_field")
    assert snapshot(world.app) == before
    me = _ok(world.client.get("/v1/users/me", headers=world.h("alice")))
    assert me["display_name"] == "alice" and me["push_previews"] is True
    assert world.client.post("/v1/sessions", json={
        "username": "alice", "password": "newpassword1"}).status_code == 401


# --- the generic sweep over every JSON route ------------------------------------------------

# POST routes that take no body: anything sent is ignored.
BODYLESS = {"events.ticket", "conversations.typing"}
# An empty PATCH is a valid no-op update.
EMPTY_OBJECT_OK = {("PATCH", "accounts.update_me")}
SWEEP_BODIES = {"malformed": "{", "array": "[]", "string": '"x"', "empty_object": "{}"}


def _json_routes(app) -> list[tuple[str, str, str]]:
    routes = []
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods & {"POST", "PATCH", "PUT"}):
            if rule.endpoint not in BODYLESS:
                routes.append((method, rule.rule, rule.endpoint))
    return routes


def _concrete(w: World, rule: str) -> str:
    return (rule.replace("<int:conversation_id>", str(w.group))
            .replace("<int:user_id>", str(w.id("carol")))
            .replace("<int:device_id>", "1"))


def test_sweep_covers_the_known_json_routes(app) -> None:
    endpoints = {e for _, _, e in _json_routes(app)}
    assert {"accounts.sign_up", "accounts.log_in", "accounts.update_me", "accounts.add_friend",
            "conversations.create_conversation", "conversations.add_member",
            "conversations.send", "conversations.mark_read"} <= endpoints
    for rule in app.url_map.iter_rules():  # a new parameter name needs a sample value here
        assert set(rule.arguments) <= {"conversation_id", "user_id", "device_id",
                                      "filename"}, rule.rule


@pytest.mark.parametrize("body", list(SWEEP_BODIES))
def test_sweep_every_json_route(world: World, body: str) -> None:
    failures = []
    for method, rule, endpoint in _json_routes(world.app):
        before = snapshot(world.app)
        response = world.client.open(_concrete(world, rule), method=method,
                                     data=SWEEP_BODIES[body], content_type="application/json",
                                     headers=world.h("alice"))
        if body == "empty_object" and (method, endpoint) in EMPTY_OBJECT_OK:
            ok = response.status_code == 200
        else:
            try:
                assert_error(response)
                ok = True
            except AssertionError:
                ok = False
        if not ok or snapshot(world.app) != before:
            failures.append((method, rule, response.status_code,
                             response.get_data(as_text=True)[:200]))
    assert not failures


def test_bodyless_routes_ignore_a_body(world: World) -> None:
    """The sweep skips these; prove they really take no body (a junk one changes nothing)."""
    r = world.client.post("/v1/events/tickets", data="{", content_type="application/json",
                          headers=world.h("alice"))
    assert r.status_code == 201
    r = world.client.post(f"/v1/conversations/{world.group}/typing", data="{",
                          content_type="application/json", headers=world.h("alice"))
    assert r.status_code == 202


# --- WebSocket frames (real sockets): a bad frame gets an error frame, the socket lives on --

WS_FRAMES = {
    "invalid_json": ("{", "invalid_json"),
    "not_object": ("[]", "invalid_json"),
    "unknown_type": ('{"type": "launch"}', "invalid_frame"),
    "no_type": ("{}", "invalid_frame"),
    "send_no_text": ('{"type": "send", "conversation_id": %(cid)d, "client_msg_id": "a"}',
                     "missing_field"),
    "send_blank_text": ('{"type": "send", "conversation_id": %(cid)d, '
                        '"client_msg_id": "a", "text": "  "}', "invalid_field"),
    "send_conversation_id_string": ('{"type": "send", "conversation_id": "%(cid)d", '
                                    '"client_msg_id": "a", "text": "hi"}', "invalid_field"),
    "send_conversation_id_bool": ('{"type": "send", "conversation_id": true, '
                                  '"client_msg_id": "a", "text": "hi"}', "invalid_field"),
    "send_surrogate_text": ('{"type": "send", "conversation_id": %(cid)d, '
                            '"client_msg_id": "a", "text": "\\ud800"}', "invalid_field"),
    "read_bad_message_id": ('{"type": "read", "conversation_id": %(cid)d, '
                            '"message_id": 1.5}', "missing_field"),
    "typing_unknown_conversation": ('{"type": "typing", "conversation_id": 987654}',
                                    "not_found"),
}
WS_FRAMES_KILLING_THE_READER = {
    "deep_nesting": "[" * 100_000,
    "surrogate_ref": '{"type": "ping", "ref": "\\ud800"}',
}


@pytest.fixture
def ws_pair(new_user):  # type: ignore[no-untyped-def]
    from switchboard_client import open_transport

    alice, bob = new_user(), new_user()
    cid = alice.direct(bob.user_id)["id"]
    feed = open_transport("ws", alice)
    yield alice, cid, feed
    feed.close()


def _still_answers(feed) -> bool:  # type: ignore[no-untyped-def]
    from switchboard_client import TransportClosed

    try:
        return feed.request({"type": "ping"}, timeout=1.5)["type"] == "pong"
    except TransportClosed:
        return False


@pytest.mark.parametrize("name", list(WS_FRAMES))
def test_bad_websocket_frame_gets_an_error_frame(ws_pair, name: str) -> None:  # type: ignore[no-untyped-def]
    alice, cid, feed = ws_pair
    raw, code = WS_FRAMES[name]
    feed.sock.send(raw % {"cid": cid} if "%(cid)" in raw else raw)
    reply = feed.next_batch(5)
    assert [r["type"] for r in reply] == ["error"], reply
    assert 400 <= reply[0]["data"]["status"] < 500 and reply[0]["data"]["code"] == code, reply
    assert reply[0]["data"]["message"]
    assert _still_answers(feed)
    assert alice.messages(cid) == []


@pytest.mark.parametrize("name", list(WS_FRAMES_KILLING_THE_READER))
def test_hostile_websocket_frame_does_not_kill_the_reader(ws_pair, name: str) -> None:  # type: ignore[no-untyped-def]
    _, _, feed = ws_pair
    feed.sock.send(WS_FRAMES_KILLING_THE_READER[name])
    alive = _still_answers(feed)
    if not alive:
        feed.sock.shutdown()  # no close handshake: nobody is reading on the server
    assert alive
