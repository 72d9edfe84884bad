"""Authorization: membership on every conversation read and write, and credentials.

* Non-members cannot read, page, mark read, post, type, manage members or get a
  conversation (403; 404 for unknown ids), and their event feeds never carry it.
* Forged, expired and revoked tokens get 401 with the JSON error shape on every
  authenticated route (enumerated from ``app.url_map``, so a new route cannot slip
  out) and on every transport over real sockets. Stream tickets are single-use and
  expire. Logging out ends that session's live streams, and only that session's.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from storage import models
from storage.db import db
from switchboard_client import Api, TransportClosed, open_transport
from tests.test_bad_input import assert_error, snapshot

PASSWORD = "password123"

# Routes anyone may call. Everything else in url_map must demand credentials.
PUBLIC = {("POST", "/v1/users"), ("POST", "/v1/sessions"), ("GET", "/v1/health"),
          ("GET", "/v1/ready"), ("GET", "/metrics"), ("GET", "/v1/discover"),
          ("GET", "/v1/openapi.json"), ("GET", "/")}
PUBLIC_ENDPOINTS = {"static"}


# --- forging credentials --------------------------------------------------------------------

def forge(secret: str, purpose: str, payload: Any, age: float = 0) -> str:
    """A token/ticket in the server's exact format, signed with ``secret``, ``age`` s old."""
    # The timestamp comes from the signer (URLSafeTimedSerializer has no get_timestamp
    # of its own in itsdangerous 2.x): backdate it there.
    class Backdated(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time() - age)

    salt = f"switchboard.{purpose}"
    token = URLSafeTimedSerializer(secret, salt=salt, signer=Backdated).dumps(payload)
    _, signed_at = URLSafeTimedSerializer(secret, salt=salt).loads(token,
                                                                   return_timestamp=True)
    assert abs(time.time() - age - signed_at.timestamp()) < 5  # really backdated
    return token


def claims(secret: str, token: str) -> dict:
    return URLSafeTimedSerializer(secret, salt="switchboard.access").loads(token)


def tamper(token: str, **changes: Any) -> str:
    """Rewrite the signed payload but keep the original timestamp and signature."""
    payload, rest = token.split(".", 1)
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(changes)
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=") + "." + rest


def flip_signature(token: str) -> str:
    # Change the signature's first character: all six of its bits count (the last
    # character's low bits are base64 padding and may decode to the same bytes).
    head, _, signature = token.rpartition(".")
    first = "A" if signature[0] != "A" else "Q"
    return f"{head}.{first}{signature[1:]}"


@dataclasses.dataclass
class Creds:
    """What one attempt sends: an Authorization header and/or query parameters."""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    query: dict[str, str] = dataclasses.field(default_factory=dict)


def bearer(token: str) -> Creds:
    return Creds(headers={"Authorization": f"Bearer {token}"})


@dataclasses.dataclass
class Keys:
    """One victim's real credentials, and the means to forge others."""
    secret: str
    token: str  # alice's live token
    user_id: int
    other_id: int  # another real user
    revoked: str  # a token of a session that logged out
    ticket: Callable[[], str]  # a fresh, valid ticket of alice's live session

    @property
    def sid(self) -> str:
        return claims(self.secret, self.token)["s"]


# Bad credentials for bearer-authenticated requests.
BAD_BEARER: dict[str, Callable[[Keys], Creds]] = {
    "none": lambda k: Creds(),
    "empty_bearer": lambda k: Creds(headers={"Authorization": "Bearer "}),
    "basic_scheme": lambda k: Creds(headers={
        "Authorization": "Basic " + base64.b64encode(b"alice:password123").decode()}),
    "token_scheme_with_valid_token": lambda k: Creds(headers={
        "Authorization": f"Token {k.token}"}),
    "random_string": lambda k: bearer(base64.urlsafe_b64encode(os.urandom(30)).decode()),
    "jwt_shaped": lambda k: bearer("eyJhbGciOiJub25lIn0.eyJ1IjoxfQ."),
    "tampered_user": lambda k: bearer(tamper(k.token, u=k.other_id)),
    "tampered_session": lambda k: bearer(tamper(k.token, s="0" * 32)),
    "flipped_signature": lambda k: bearer(flip_signature(k.token)),
    "truncated": lambda k: bearer(k.token[:-5]),
    "other_secret": lambda k: bearer(forge("not-the-secret", "access",
                                           {"u": k.user_id, "s": k.sid})),
    "expired": lambda k: bearer(forge(k.secret, "access", {"u": k.user_id, "s": k.sid},
                                      age=400 * 24 * 3600)),
    "unknown_session": lambda k: bearer(forge(k.secret, "access",
                                              {"u": k.user_id, "s": "f" * 32})),
    "session_of_other_user": lambda k: bearer(forge(k.secret, "access",
                                                    {"u": k.other_id, "s": k.sid})),
    "user_id_as_string": lambda k: bearer(forge(k.secret, "access",
                                                {"u": str(k.user_id), "s": k.sid})),
    "user_id_as_bool": lambda k: bearer(forge(k.secret, "access", {"u": True, "s": k.sid})),
    "payload_not_object": lambda k: bearer(forge(k.secret, "access", [k.user_id, k.sid])),
    "revoked": lambda k: bearer(k.revoked),
    "ticket_as_bearer": lambda k: bearer(k.ticket()),
    "token_in_query": lambda k: Creds(query={"token": k.token, "access_token": k.token}),
    "token_as_ticket": lambda k: Creds(query={"ticket": k.token}),
}

# Bad tickets for ``?ticket=`` on the stream handshakes.
BAD_TICKET: dict[str, Callable[[Keys], str]] = {
    "random_string": lambda k: base64.urlsafe_b64encode(os.urandom(30)).decode(),
    "bearer_token": lambda k: k.token,
    "other_secret": lambda k: forge("not-the-secret", "ticket",
                                    {"u": k.user_id, "s": k.sid, "n": "abc"}),
    "expired": lambda k: forge(k.secret, "ticket", {"u": k.user_id, "s": k.sid, "n": "old1"},
                               age=3600),
    "tampered_user": lambda k: tamper(k.ticket(), u=k.other_id),
    "no_nonce": lambda k: forge(k.secret, "ticket", {"u": k.user_id, "s": k.sid}),
    "revoked_session": lambda k: forge(k.secret, "ticket", {
        "u": k.user_id, "s": claims(k.secret, k.revoked)["s"], "n": "rev1"}),
}


# --- in-process world -----------------------------------------------------------------------

@dataclasses.dataclass
class World:
    app: Any
    client: Any
    ids: dict[str, int]
    tokens: dict[str, str]
    group: int  # alice (admin), bob
    direct: int  # alice <-> bob
    msg: str  # a message in group

    def h(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    def login(self, name: str) -> str:
        r = self.client.post("/v1/sessions", json={"username": name, "password": PASSWORD})
        assert r.status_code == 201
        return r.get_json()["token"]


@pytest.fixture
def world(app, client) -> World:
    ids, tokens = {}, {}
    for name in ("alice", "bob", "carol", "dave"):
        r = client.post("/v1/users", json={"username": name, "password": PASSWORD})
        assert r.status_code == 201
        ids[name], tokens[name] = r.get_json()["user"]["id"], r.get_json()["token"]
    hdr = {n: {"Authorization": f"Bearer {t}"} for n, t in tokens.items()}
    group = client.post("/v1/conversations", headers=hdr["alice"], json={
        "kind": "group", "title": "team", "member_ids": [ids["bob"]]}).get_json()["id"]
    direct = client.post("/v1/conversations", headers=hdr["alice"], json={
        "kind": "direct", "user_id": ids["bob"]}).get_json()["id"]
    msg = client.post(f"/v1/conversations/{group}/messages", headers=hdr["alice"],
                      json={"client_msg_id": "m1", "text": "hello"}).get_json()["id"]
    return World(app, client, ids, tokens, group, direct, msg)


def _actions(w: World, cid: int) -> list[tuple[str, str, str, dict | None]]:
    """Every conversation-scoped request, for a conversation id: (name, method, url, json)."""
    base = f"/v1/conversations/{cid}"
    return [
        ("get", "GET", base, None),
        ("page", "GET", f"{base}/messages", None),
        ("page_around", "GET", f"{base}/messages?around={w.msg}", None),
        ("page_before", "GET", f"{base}/messages?before={w.msg}&limit=5", None),
        ("post", "POST", f"{base}/messages", {"client_msg_id": "intrude", "text": "hi"}),
        ("mark_read", "POST", f"{base}/read", {"message_id": w.msg}),
        ("typing", "POST", f"{base}/typing", None),
        ("add_self", "POST", f"{base}/members", {"user_id": w.ids["carol"]}),
        ("add_other", "POST", f"{base}/members", {"user_id": w.ids["dave"]}),
        ("remove_member", "DELETE", f"{base}/members/{w.ids['bob']}", None),
        ("remove_admin", "DELETE", f"{base}/members/{w.ids['alice']}", None),
        ("leave", "DELETE", f"{base}/members/{w.ids['carol']}", None),
    ]


ACTION_NAMES = ["get", "page", "page_around", "page_before", "post", "mark_read", "typing",
                "add_self", "add_other", "remove_member", "remove_admin", "leave"]


def test_action_list_is_complete(world: World) -> None:
    assert [a[0] for a in _actions(world, world.group)] == ACTION_NAMES


def _open(w: World, method: str, url: str, body: dict | None, who: str):
    return w.client.open(url, method=method, json=body, headers=w.h(who))


# --- membership -----------------------------------------------------------------------------

@pytest.mark.parametrize("action", ACTION_NAMES)
@pytest.mark.parametrize("target", ["group", "direct"])
def test_non_member_is_forbidden(world: World, target: str, action: str) -> None:
    cid = getattr(world, target)
    _, method, url, body = next(a for a in _actions(world, cid) if a[0] == action)
    before = snapshot(world.app)
    assert_error(_open(world, method, url, body, "carol"), 403, "forbidden")
    assert snapshot(world.app) == before


@pytest.mark.parametrize("action", ACTION_NAMES)
def test_unknown_conversation_is_not_found(world: World, action: str) -> None:
    _, method, url, body = next(a for a in _actions(world, 987654) if a[0] == action)
    before = snapshot(world.app)
    assert_error(_open(world, method, url, body, "alice"), 404, "not_found")
    assert snapshot(world.app) == before


def test_members_can_do_what_outsiders_cannot(world: World) -> None:
    """The control for the two tests above: the same requests succeed for a member."""
    for name, method, url, body in _actions(world, world.group):
        if name in ("add_self", "add_other", "remove_member", "remove_admin", "leave"):
            continue
        response = _open(world, method, url, body, "bob")
        assert response.status_code in (200, 201, 202), (name, response.get_json())


def test_conversation_list_shows_only_my_conversations(world: World) -> None:
    listed = world.client.get("/v1/conversations", headers=world.h("carol")).get_json()
    assert listed["conversations"] == []
    mine = world.client.get("/v1/conversations", headers=world.h("bob")).get_json()
    assert {c["id"] for c in mine["conversations"]} == {world.group, world.direct}


def test_removed_member_loses_access(world: World) -> None:
    assert world.client.delete(f"/v1/conversations/{world.group}/members/{world.ids['bob']}",
                               headers=world.h("alice")).status_code == 204
    for name, method, url, body in _actions(world, world.group):
        response = _open(world, method, url, body, "bob")
        assert_error(response, 403, "forbidden")
        assert name  # every action was tried


def test_member_who_left_loses_access(world: World) -> None:
    assert world.client.delete(f"/v1/conversations/{world.group}/members/{world.ids['bob']}",
                               headers=world.h("bob")).status_code == 204
    response = world.client.get(f"/v1/conversations/{world.group}/messages",
                                headers=world.h("bob"))
    assert_error(response, 403, "forbidden")


def test_message_of_a_foreign_conversation_cannot_be_reached_through_mine(
        world: World) -> None:
    """Carol anchors on / marks read a message id of a conversation she is not in."""
    carol_dave = world.client.post("/v1/conversations", headers=world.h("carol"), json={
        "kind": "direct", "user_id": world.ids["dave"]}).get_json()["id"]
    base = f"/v1/conversations/{carol_dave}"
    for anchor in ("before", "after", "around"):
        response = world.client.get(f"{base}/messages?{anchor}={world.msg}",
                                    headers=world.h("carol"))
        assert_error(response, 404)
    before = snapshot(world.app)
    assert_error(world.client.post(f"{base}/read", json={"message_id": world.msg},
                                   headers=world.h("carol")), 404)
    assert snapshot(world.app) == before


def _events(w: World, who: str, cursor: str) -> list[dict]:
    body = w.client.get("/v1/events", query_string={"cursor": cursor},
                        headers=w.h(who)).get_json()
    return body["events"]


def mentions(payload: Any, conversation_ids: set[int]) -> bool:
    """Does an event carry anything about one of these conversations?"""
    if isinstance(payload, dict):
        if payload.get("conversation_id") in conversation_ids:
            return True
        if payload.get("kind") in ("direct", "group") and payload.get("id") in conversation_ids:
            return True
        return any(mentions(v, conversation_ids) for v in payload.values())
    if isinstance(payload, list):
        return any(mentions(v, conversation_ids) for v in payload)
    return False


def test_non_member_feed_gets_nothing_of_the_conversation_in_process(world: World) -> None:
    cursors = {n: world.client.get("/v1/events", headers=world.h(n)).get_json()["cursor"]
               for n in ("bob", "carol")}
    sent = world.client.post(f"/v1/conversations/{world.group}/messages",
                             headers=world.h("alice"),
                             json={"client_msg_id": "m2", "text": "for bob"}).get_json()
    world.client.post(f"/v1/conversations/{world.group}/read", headers=world.h("bob"),
                      json={"message_id": sent["id"]})
    world.client.post(f"/v1/conversations/{world.group}/members", headers=world.h("alice"),
                      json={"user_id": world.ids["dave"]})
    bob = _events(world, "bob", cursors["bob"])
    assert {"message.created", "receipt", "conversation.member_added"} <= {
        e["type"] for e in bob}  # the control: these events exist
    assert not [e for e in _events(world, "carol", cursors["carol"])
                if mentions(e, {world.group, world.direct})]


# --- every authenticated route refuses bad credentials (in-process, from url_map) -----------

def _authenticated_routes(app) -> list[tuple[str, str, Any]]:
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC_ENDPOINTS:
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            if (method, rule.rule) not in PUBLIC:
                routes.append((method, rule.rule, rule))
    return routes


def _url(w: World, rule: str) -> str:
    return (rule.replace("<int:conversation_id>", str(w.group))
            .replace("<int:user_id>", str(w.ids["bob"]))
            .replace("<int:device_id>", "1"))


def _request(w: World, method: str, rule: Any, creds: Creds):
    environ: dict[str, Any] = {}
    headers = dict(creds.headers)
    if rule.websocket:
        # A well-formed handshake, so only the credentials can be what is wrong.
        headers.update({"Upgrade": "websocket", "Connection": "Upgrade",
                        "Sec-WebSocket-Version": "13",
                        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()})
        environ["gunicorn.socket"] = object()
    body = {} if method in ("POST", "PATCH", "PUT") else None
    return w.client.open(_url(w, rule.rule), method=method, json=body, headers=headers,
                         query_string=creds.query, environ_overrides=environ)


def _keys(w: World) -> Keys:
    revoked = w.login("alice")
    assert w.client.delete("/v1/sessions/current", headers={
        "Authorization": f"Bearer {revoked}"}).status_code == 204

    def ticket() -> str:
        return w.client.post("/v1/events/tickets", headers=w.h("alice")).get_json()["ticket"]

    return Keys(w.app.config["SECRET_KEY"], w.tokens["alice"], w.ids["alice"], w.ids["bob"],
                revoked, ticket)


def test_route_enumeration_finds_the_authenticated_routes(app) -> None:
    found = {(m, r) for m, r, _ in _authenticated_routes(app)}
    assert {("GET", "/v1/users/me"), ("DELETE", "/v1/sessions/current"),
            ("POST", "/v1/conversations/<int:conversation_id>/messages"),
            ("GET", "/v1/events"), ("GET", "/v1/events/stream"), ("GET", "/v1/events/ws"),
            ("POST", "/v1/events/tickets"), ("GET", "/v1/presence")} <= found
    assert len(found) >= 22


@pytest.mark.parametrize("kind", list(BAD_BEARER))
def test_bad_credentials_get_401_on_every_route(world: World, kind: str) -> None:
    keys = _keys(world)
    before = snapshot(world.app)
    failures = []
    for method, path, rule in _authenticated_routes(world.app):
        response = _request(world, method, rule, BAD_BEARER[kind](keys))
        try:
            assert_error(response, 401, "unauthorized")
            assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")
        except AssertionError as err:
            failures.append((method, path, response.status_code, str(err)[:200]))
        finally:
            response.close()
    assert not failures
    assert snapshot(world.app) == before
    # Nothing above logged alice out (DELETE /v1/sessions/current was among the routes).
    assert world.client.get("/v1/users/me", headers=world.h("alice")).status_code == 200


def test_good_credentials_pass_every_route(world: World) -> None:
    """The control: with a live token no route answers 401 (the WebSocket route is
    checked over real sockets below)."""
    for method, path, rule in _authenticated_routes(world.app):
        if rule.websocket:
            continue
        response = _request(world, method, rule, bearer(world.login("alice")))
        assert response.status_code != 401, (method, path, response.get_json())
        response.close()


def test_server_side_expired_session_gets_401(world: World) -> None:
    token = world.login("alice")
    sid = claims(world.app.config["SECRET_KEY"], token)["s"]
    with world.app.app_context():
        db.session.get(models.AuthSession, sid).expires_at = models.now_ms() - 1
        db.session.commit()
    assert_error(world.client.get("/v1/users/me", headers={
        "Authorization": f"Bearer {token}"}), 401, "unauthorized")


def test_a_token_accepted_before_expires_on_time(world: World, monkeypatch) -> None:
    """Signatures are checked once per process; the age still counts on every use."""
    token = world.login("alice")
    headers = {"Authorization": f"Bearer {token}"}
    assert world.client.get("/v1/users/me", headers=headers).status_code == 200
    ttl = world.app.extensions["switchboard"].settings.token_ttl
    later = time.time() + ttl + 5
    monkeypatch.setattr("gateway.auth.time.time", lambda: later)
    assert_error(world.client.get("/v1/users/me", headers=headers), 401, "unauthorized")
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    monkeypatch.undo()
    assert_error(world.client.get("/v1/users/me", headers={
        "Authorization": f"Bearer {tampered}"}), 401, "unauthorized")


def test_logout_revokes_only_that_session(world: World) -> None:
    second = world.login("alice")
    assert world.client.delete("/v1/sessions/current",
                               headers=world.h("alice")).status_code == 204
    assert_error(world.client.get("/v1/users/me", headers=world.h("alice")), 401)
    assert_error(world.client.delete("/v1/sessions/current", headers=world.h("alice")), 401)
    assert world.client.get("/v1/users/me", headers={
        "Authorization": f"Bearer {second}"}).status_code == 200


# --- every transport over real sockets ------------------------------------------------------

def _ws_headers() -> dict[str, str]:
    return {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}


def _transport_request(url: str, transport: str, creds: Creds) -> requests.Response:
    headers, params = dict(creds.headers), dict(creds.query)
    if transport == "poll":
        return requests.get(f"{url}/v1/events", headers=headers, params=params, timeout=10)
    if transport == "longpoll":
        return requests.get(f"{url}/v1/events", headers=headers,
                            params={**params, "wait": "20"}, timeout=10)
    if transport == "sse":
        return requests.get(f"{url}/v1/events/stream", stream=True, timeout=10,
                            headers={**headers, "Accept": "text/event-stream"}, params=params)
    if transport == "ws":
        return requests.get(f"{url}/v1/events/ws", stream=True, timeout=10,
                            headers={**headers, **_ws_headers()}, params=params)
    raise AssertionError(transport)


def _assert_http_401(response: requests.Response) -> None:
    try:
        assert response.status_code == 401, (response.status_code, response.headers)
        assert response.headers["Content-Type"].startswith("application/json")
        error = response.json()["error"]
        assert error["code"] == "unauthorized" and error["message"], error
    finally:
        response.close()


@pytest.fixture
def gw_keys(gateway, new_user) -> tuple[Api, Keys]:
    secret = (gateway.data_dir / "secret_key").read_text().strip()
    alice, bob = new_user(), new_user()
    gone = Api(gateway.url)
    gone.log_in(alice.user["username"], PASSWORD)
    gone_token = gone.token
    gone.log_out()
    return alice, Keys(secret, alice.token, alice.user_id, bob.user_id, gone_token,
                       alice.ticket)


BEARER_ON_SOCKETS = ["none", "random_string", "tampered_user", "flipped_signature",
                     "other_secret", "expired", "unknown_session", "session_of_other_user",
                     "revoked", "ticket_as_bearer", "token_in_query"]


@pytest.mark.parametrize("kind", BEARER_ON_SOCKETS)
@pytest.mark.parametrize("transport", ["poll", "longpoll", "sse", "ws"])
def test_bad_bearer_on_every_transport(gateway, gw_keys, transport: str, kind: str) -> None:
    _, keys = gw_keys
    started = time.monotonic()
    _assert_http_401(_transport_request(gateway.url, transport, BAD_BEARER[kind](keys)))
    assert time.monotonic() - started < 5  # refused at once, not after a long-poll


@pytest.mark.parametrize("kind", list(BAD_TICKET))
@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_bad_ticket_on_stream_handshakes(gateway, gw_keys, transport: str, kind: str) -> None:
    _, keys = gw_keys
    _assert_http_401(_transport_request(gateway.url, transport,
                                        Creds(query={"ticket": BAD_TICKET[kind](keys)})))


@pytest.mark.parametrize("transport", ["poll", "longpoll"])
def test_tickets_do_not_open_polls(gateway, gw_keys, transport: str) -> None:
    """Tickets are for headerless EventSource/WebSocket only, not a token in a URL."""
    _, keys = gw_keys
    _assert_http_401(_transport_request(gateway.url, transport,
                                        Creds(query={"ticket": keys.ticket()})))


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_valid_credentials_open_the_stream(gateway, gw_keys, transport: str) -> None:
    """The control for the tests above: header and ticket both open the stream."""
    alice, _ = gw_keys
    for use_ticket in (False, True):
        with open_transport(transport, alice, use_ticket=use_ticket) as feed:
            assert feed.cursor


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_ticket_is_single_use(gateway, gw_keys, transport: str) -> None:
    alice, _ = gw_keys
    ticket = alice.ticket()
    first = _transport_request(gateway.url, transport, Creds(query={"ticket": ticket}))
    try:
        assert first.status_code == (200 if transport == "sse" else 101)
    finally:
        first.close()
    _assert_http_401(_transport_request(gateway.url, transport,
                                        Creds(query={"ticket": ticket})))
    # Across transports too: a ticket spent on one cannot open the other.
    other = "ws" if transport == "sse" else "sse"
    _assert_http_401(_transport_request(gateway.url, other, Creds(query={"ticket": ticket})))


def test_ticket_expires(make_gateway) -> None:
    server = make_gateway(ticket_ttl=1)
    api = Api(server.url)
    api.sign_up("ticketeer", PASSWORD)
    ticket = api.ticket()
    time.sleep(2.2)
    for transport in ("sse", "ws"):
        _assert_http_401(_transport_request(server.url, transport,
                                            Creds(query={"ticket": ticket})))
    fresh = _transport_request(server.url, "sse", Creds(query={"ticket": api.ticket()}))
    assert fresh.status_code == 200
    fresh.close()


def test_ticket_dies_with_its_session(gateway, new_user) -> None:
    alice = new_user()
    ticket = alice.ticket()
    alice.log_out()
    _assert_http_401(_transport_request(gateway.url, "sse", Creds(query={"ticket": ticket})))


# --- logging out ends that session's live streams -------------------------------------------

def _expect_closed(feed, reason: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            feed.next_batch(1.0)
        except TransportClosed as closed:
            assert closed.reason == reason
            return
    raise AssertionError(f"{feed.name} stream was not closed")


def test_logout_ends_that_sessions_streams_only(gateway, new_user) -> None:
    alice, bob = new_user(), new_user()
    other = Api(gateway.url)
    other.log_in(alice.user["username"], PASSWORD)
    conversation = bob.direct(alice.user_id)["id"]

    mine = [open_transport("sse", alice), open_transport("sse", alice, use_ticket=False),
            open_transport("ws", alice), open_transport("ws", alice, use_ticket=True)]
    kept = [open_transport("sse", other), open_transport("ws", other)]
    cursor = alice.poll()["cursor"]
    held: dict[str, Any] = {}

    def long_poll() -> None:
        held["body"] = alice.poll(cursor, wait=20)

    poller = threading.Thread(target=long_poll)
    poller.start()
    time.sleep(0.5)  # the long-poll is now waiting on the server
    try:
        started = time.monotonic()
        alice.log_out()
        poller.join(10)
        assert held["body"].get("closed") == "session_revoked"
        assert time.monotonic() - started < 5
        for feed in mine:
            _expect_closed(feed, "session_revoked")
        assert mine[2].close_code == 4001 and mine[3].close_code == 4001
        # The revoked token opens nothing new.
        for transport in ("poll", "sse", "ws"):
            _assert_http_401(_transport_request(gateway.url, transport,
                                                bearer(alice.token)))
        # The other session of the same user still works, live and new.
        sent = bob.send(conversation, "still here?")
        for feed in kept:
            got = feed.collect(1, 10, kind="message.created")
            assert [e["data"]["id"] for e in got] == [sent["id"]], feed.name
        assert other.request("GET", "/v1/users/me")["id"] == alice.user_id
    finally:
        for feed in mine + kept:
            feed.close()


# --- a non-member's live feed never carries the conversation --------------------------------

def test_non_member_streams_get_nothing_of_the_conversation(gateway, new_user) -> None:
    alice, bob, carol = new_user(), new_user(), new_user()
    group = alice.group("private", [bob.user_id])["id"]
    direct = alice.direct(bob.user_id)["id"]
    secret = {group, direct}
    feeds = {"carol": [open_transport(t, carol) for t in ("poll", "longpoll", "sse", "ws")],
             "bob": [open_transport("ws", bob)]}
    try:
        first = alice.send(group, "group secret")
        alice.send(direct, "direct secret")
        bob.mark_read(group, first["id"])
        alice.typing(group)
        bob.typing(direct)
        alice.request("POST", f"/v1/conversations/{group}/members",
                      json={"user_id": carol.user_id})
        alice.request("DELETE", f"/v1/conversations/{group}/members/{carol.user_id}")
        after_removal = alice.send(group, "after carol left")
        # A sentinel carol may see: once it arrives, everything before it has too.
        mine = alice.direct(carol.user_id)["id"]
        sentinel = alice.send(mine, "sentinel")

        for feed in feeds["carol"]:
            seen: list[dict] = []
            deadline = time.monotonic() + 10
            while not any(e.get("type") == "message.created"
                          and e["data"]["id"] == sentinel["id"] for e in seen):
                assert time.monotonic() < deadline, (feed.name, seen)
                seen.extend(feed.next_batch(1.0))
            # While carol was briefly a member she may see that she was added/removed;
            # no message, receipt or typing of the group or of bob's direct chat.
            leaks = [e for e in seen if mentions(e, secret) and e["type"] in (
                "message.created", "receipt", "typing")]
            assert not leaks, (feed.name, leaks)
            assert after_removal["id"] not in json.dumps(seen)

        # The control: bob, a member, received each kind of event carol did not.
        kinds: set[str] = set()
        deadline = time.monotonic() + 10
        while not {"message.created", "receipt", "typing"} <= kinds:
            assert time.monotonic() < deadline, kinds
            kinds |= {e["type"] for e in feeds["bob"][0].next_batch(1.0)
                      if mentions(e, secret)}
    finally:
        for group_feeds in feeds.values():
            for feed in group_feeds:
                feed.close()


def test_non_member_websocket_frames_are_refused(gateway, new_user) -> None:
    alice, bob, carol = new_user(), new_user(), new_user()
    group = alice.group("private", [bob.user_id])["id"]
    first = alice.send(group, "hello")
    with open_transport("ws", carol) as ws, open_transport("ws", bob) as bob_ws:
        frames = [
            {"type": "send", "conversation_id": group, "client_msg_id": "x1", "text": "hi"},
            {"type": "read", "conversation_id": group, "message_id": first["id"]},
            {"type": "typing", "conversation_id": group},
            {"type": "send", "conversation_id": 987654, "client_msg_id": "x2", "text": "hi"},
        ]
        replies = [ws.request(frame) for frame in frames]
        assert [r["type"] for r in replies] == ["error"] * 4, replies
        assert [r["data"]["status"] for r in replies] == [403, 403, 403, 404], replies
        assert bob_ws.collect(1, 1.5) == []  # no message, receipt or typing reached bob
    assert [m["id"] for m in bob.messages(group)] == [first["id"]]
