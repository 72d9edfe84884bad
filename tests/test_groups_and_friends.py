"""Group membership rules, friends, and the events they produce (in-process app)."""

from __future__ import annotations

import itertools

import pytest

_n = itertools.count()


class User:
    def __init__(self, client) -> None:  # type: ignore[no-untyped-def]
        self.client = client
        name = f"user{next(_n)}"
        body = client.post("/v1/users", json={"username": name, "password": "password123"})
        assert body.status_code == 201, body.json
        self.id = body.json["user"]["id"]
        self.headers = {"Authorization": f"Bearer {body.json['token']}"}
        self.cursor = client.get("/v1/events", headers=self.headers).json["cursor"]

    def call(self, method: str, path: str, json=None, status: int | None = None):  # type: ignore[no-untyped-def]
        response = self.client.open(path, method=method, json=json, headers=self.headers)
        if status is not None:
            assert response.status_code == status, response.json
        return response

    def events(self) -> list[dict]:
        body = self.call("GET", f"/v1/events?cursor={self.cursor}", status=200).json
        self.cursor = body["cursor"]
        return body["events"]


@pytest.fixture
def users(client):  # type: ignore[no-untyped-def]
    return [User(client) for _ in range(4)]


def test_direct_conversation_is_unique_per_pair(users):
    a, b, *_ = users
    first = a.call("POST", "/v1/conversations", {"kind": "direct", "user_id": b.id}, 201).json
    again = b.call("POST", "/v1/conversations", {"kind": "direct", "user_id": a.id}, 200).json
    assert first["id"] == again["id"]
    assert [e["type"] for e in b.events()] == ["conversation.created"]


def test_group_admin_adds_and_removes_members_and_everyone_hears(users):
    admin, b, c, d = users
    group = admin.call("POST", "/v1/conversations",
                       {"kind": "group", "title": "team", "member_ids": [b.id]}, 201).json
    gid = group["id"]
    assert {m["id"]: m["role"] for m in group["members"]} == {admin.id: "admin", b.id: "member"}
    b.call("POST", f"/v1/conversations/{gid}/members", {"user_id": c.id}, 403)
    admin.call("POST", f"/v1/conversations/{gid}/members", {"user_id": c.id}, 201)
    admin.call("POST", f"/v1/conversations/{gid}/members", {"user_id": c.id}, 200)  # no-op
    added = [e for e in c.events() if e["type"] == "conversation.member_added"]
    assert added and added[0]["data"]["user_id"] == c.id
    b.call("DELETE", f"/v1/conversations/{gid}/members/{c.id}", status=403)
    admin.call("DELETE", f"/v1/conversations/{gid}/members/{c.id}", status=204)
    removed = [e for e in c.events() if e["type"] == "conversation.member_removed"]
    assert removed and removed[0]["data"]["user_id"] == c.id
    c.call("GET", f"/v1/conversations/{gid}/messages", status=403)
    d.call("GET", f"/v1/conversations/{gid}", status=403)


def test_anyone_may_leave_and_the_group_keeps_an_admin(users):
    admin, b, c, _ = users
    gid = admin.call("POST", "/v1/conversations",
                     {"kind": "group", "title": "t", "member_ids": [b.id, c.id]}, 201).json["id"]
    admin.call("DELETE", f"/v1/conversations/{gid}/members/{admin.id}", status=204)
    members = b.call("GET", f"/v1/conversations/{gid}", status=200).json["members"]
    assert [m["role"] for m in members].count("admin") == 1
    assert admin.id not in [m["id"] for m in members]


def test_direct_members_are_fixed(users):
    a, b, c, _ = users
    conv = a.call("POST", "/v1/conversations", {"kind": "direct", "user_id": b.id}, 201).json
    a.call("POST", f"/v1/conversations/{conv['id']}/members", {"user_id": c.id}, 422)
    a.call("DELETE", f"/v1/conversations/{conv['id']}/members/{a.id}", status=422)


def test_member_cap_is_configurable(app, client):
    app.extensions["switchboard"].settings = app.extensions["switchboard"].settings.with_overrides(
        max_group_members=3)
    admin, b, c, d = (User(client) for _ in range(4))
    gid = admin.call("POST", "/v1/conversations",
                     {"kind": "group", "title": "t", "member_ids": [b.id, c.id]}, 201).json["id"]
    assert admin.call("POST", f"/v1/conversations/{gid}/members",
                      {"user_id": d.id}, 422).json["error"]["code"] == "group_full"
    admin.call("POST", "/v1/conversations",
               {"kind": "group", "title": "t", "member_ids": [b.id, c.id, d.id]}, 422)


def test_friend_request_accept_list_and_remove(users):
    a, b, c, _ = users
    assert a.call("POST", "/v1/friends", {"user_id": b.id}, 201).json["status"] == "requested"
    assert [e["type"] for e in b.events()] == ["friend.request"]
    listing = b.call("GET", "/v1/friends", status=200).json
    assert [u["id"] for u in listing["incoming"]] == [a.id] and listing["friends"] == []
    assert b.call("POST", "/v1/friends", {"user_id": a.id}, 201).json["status"] == "accepted"
    assert [e["type"] for e in a.events()] == ["friend.added"]
    assert [u["id"] for u in a.call("GET", "/v1/friends", status=200).json["friends"]] == [b.id]
    assert a.call("POST", "/v1/friends", {"user_id": b.id}, 200).json["status"] == "friends"
    a.call("DELETE", f"/v1/friends/{b.id}", status=204)
    a.call("DELETE", f"/v1/friends/{b.id}", status=404)
    assert b.call("GET", "/v1/friends", status=200).json["friends"] == []
    a.call("POST", "/v1/friends", {"user_id": a.id}, 400)
    a.call("POST", "/v1/friends", {"user_id": 99999}, 404)
    assert c.call("GET", "/v1/friends", status=200).json == {
        "friends": [], "incoming": [], "outgoing": []}


def test_conversation_list_has_last_message_and_unread(users):
    a, b, *_ = users
    conv = a.call("POST", "/v1/conversations", {"kind": "direct", "user_id": b.id}, 201).json
    path = f"/v1/conversations/{conv['id']}/messages"
    for i in range(3):
        last = a.call("POST", path, {"client_msg_id": f"m{i}", "text": f"t{i}"}, 201).json
    listed = b.call("GET", "/v1/conversations", status=200).json["conversations"]
    assert listed[0]["last_message"]["id"] == last["id"] and listed[0]["unread_count"] == 3
    mine = a.call("GET", "/v1/conversations", status=200).json["conversations"]
    assert mine[0]["unread_count"] == 0  # my own messages are read by me


def test_send_rate_limit_answers_429_and_a_retry_later_succeeds(app, users):
    svc = app.extensions["switchboard"]
    svc.settings = svc.settings.with_overrides(send_rate_per_second=0.001, send_rate_burst=2)
    a, b, *_ = users
    conv = a.call("POST", "/v1/conversations", {"kind": "direct", "user_id": b.id}, 201).json
    path = f"/v1/conversations/{conv['id']}/messages"
    a.call("POST", path, {"client_msg_id": "1", "text": "x"}, 201)
    a.call("POST", path, {"client_msg_id": "2", "text": "x"}, 201)
    assert a.call("POST", path, {"client_msg_id": "3", "text": "x"}, 429).json[
        "error"]["code"] == "rate_limited"
    a.call("POST", path, {"client_msg_id": "2", "text": "x"}, 200)  # retries are free
    assert len(b.call("GET", path, status=200).json["messages"]) == 2


def test_typing_is_rate_limited_and_never_logged(app, users):
    svc = app.extensions["switchboard"]
    svc.settings = svc.settings.with_overrides(typing_interval=60)
    a, b, *_ = users
    conv = a.call("POST", "/v1/conversations", {"kind": "direct", "user_id": b.id}, 201).json
    path = f"/v1/conversations/{conv['id']}/typing"
    assert a.call("POST", path, status=202).json == {"delivered": True}
    assert a.call("POST", path, status=202).json == {"delivered": False}
    assert all(e["type"] != "typing" for e in b.events())
