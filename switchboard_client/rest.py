"""The REST half of the client: one requests.Session per user."""

from __future__ import annotations

import uuid
from typing import Any

import requests


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        super().__init__(f"{status} {error.get('code')}: {error.get('message')}")
        self.status = status
        self.code = error.get("code")
        self.body = body


class Api:
    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.user: dict[str, Any] | None = None
        self.http = requests.Session()
        # Starts the client_msg_ids made here; the Client's connections name it
        # (``own_prefix``), so the server does not hand its own messages back alone.
        self.send_prefix = f"py{uuid.uuid4().hex[:10]}-"

    def new_client_msg_id(self) -> str:
        return self.send_prefix + uuid.uuid4().hex

    @property
    def user_id(self) -> int:
        assert self.user is not None, "not signed in"
        return int(self.user["id"])

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def request(self, method: str, path: str, *, json: Any = None,
                params: dict[str, Any] | None = None, timeout: float | None = None,
                expect: tuple[int, ...] = (200, 201, 202, 204)) -> Any:
        response = self.http.request(method, self.base_url + path, json=json, params=params,
                                     headers=self.headers(), timeout=timeout or self.timeout)
        body = response.json() if response.content else None
        if response.status_code not in expect:
            raise ApiError(response.status_code, body)
        return body

    # --- accounts ----------------------------------------------------------------------
    def sign_up(self, username: str, password: str, display_name: str | None = None) -> dict:
        payload = {"username": username, "password": password}
        if display_name:
            payload["display_name"] = display_name
        return self._session(self.request("POST", "/v1/users", json=payload))

    def log_in(self, username: str, password: str) -> dict:
        return self._session(self.request("POST", "/v1/sessions",
                                          json={"username": username, "password": password}))

    def _session(self, body: dict) -> dict:
        self.token = body["token"]
        self.user = body["user"]
        return body

    def log_out(self) -> None:
        self.request("DELETE", "/v1/sessions/current")

    def find_user(self, username: str) -> dict:
        return self.request("GET", "/v1/users", params={"username": username})

    def befriend(self, user_id: int) -> dict:
        return self.request("POST", "/v1/friends", json={"user_id": user_id})

    def friends(self) -> dict:
        return self.request("GET", "/v1/friends")

    # --- conversations -----------------------------------------------------------------
    def direct(self, user_id: int) -> dict:
        return self.request("POST", "/v1/conversations",
                            json={"kind": "direct", "user_id": user_id})

    def group(self, title: str, member_ids: list[int]) -> dict:
        return self.request("POST", "/v1/conversations",
                            json={"kind": "group", "title": title, "member_ids": member_ids})

    def conversations(self) -> list[dict]:
        return self.request("GET", "/v1/conversations")["conversations"]

    def send(self, conversation_id: int, text: str, client_msg_id: str | None = None) -> dict:
        return self.request("POST", f"/v1/conversations/{conversation_id}/messages",
                            json={"client_msg_id": client_msg_id or self.new_client_msg_id(),
                                  "text": text})

    def messages(self, conversation_id: int, **params: Any) -> list[dict]:
        return self.request("GET", f"/v1/conversations/{conversation_id}/messages",
                            params=params)["messages"]

    def mark_read(self, conversation_id: int, message_id: str) -> dict:
        return self.request("POST", f"/v1/conversations/{conversation_id}/read",
                            json={"message_id": message_id})

    def typing(self, conversation_id: int) -> dict:
        return self.request("POST", f"/v1/conversations/{conversation_id}/typing")

    def presence(self, user_ids: list[int]) -> list[dict]:
        return self.request("GET", "/v1/presence",
                            params={"user_ids": ",".join(map(str, user_ids))})["presence"]

    # --- nodes -------------------------------------------------------------------------
    def discover(self, timeout: float | None = None) -> dict:
        """``{"node": {"url", "connections", "workers"}, "nodes": [...], "ttl"}``: the
        least-loaded live gateway node and every live one (no sign-in needed)."""
        return self.request("GET", "/v1/discover", timeout=timeout)

    # --- events ------------------------------------------------------------------------
    def ticket(self) -> str:
        return self.request("POST", "/v1/events/tickets")["ticket"]

    def poll(self, cursor: str | None = None, wait: float = 0, limit: int | None = None,
             timeout: float | None = None, own_prefix: str | None = None) -> dict:
        params: dict[str, Any] = {"wait": wait}
        if cursor:
            params["cursor"] = cursor
        if limit:
            params["limit"] = limit
        if own_prefix and wait > 0:
            params["own_prefix"] = own_prefix
        return self.request("GET", "/v1/events", params=params,
                            timeout=timeout or (wait + self.timeout))
