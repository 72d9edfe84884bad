"""The OpenAPI 3.1 document served at /v1/openapi.json (tests check it matches the routes)."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}
_ID = {"type": "integer", "minimum": 1}
_MSG_ID = {"type": "string", "pattern": "^[0-9]{1,19}$", "description": "63-bit id as a string"}


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props,
            "additionalProperties": True}


def _op(summary: str, status: int = 200, body: dict | None = None, params: list | None = None,
        auth: bool = True, tags: tuple[str, ...] = (), content: str = "application/json",
        ) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary, "tags": list(tags),
        "responses": {str(status): {"description": "success",
                                    "content": {content: {"schema": {}}}} if status != 204
                      else {"description": "done"},
                      "4XX": {"description": "error",
                              "content": {"application/json": {"schema": _ERROR}}}},
    }
    if body is not None:
        op["requestBody"] = {"required": True,
                             "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = params
    if not auth:
        op["security"] = []
    return op


def _q(name: str, schema: dict, required: bool = False, description: str = "") -> dict:
    return {"name": name, "in": "query", "required": required, "schema": schema,
            "description": description}


def _p(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": _ID}


_CONV = [_p("conversation_id")]
_CURSOR = _q("cursor", {"type": "string", "maxLength": 80},
             description="last event id seen; omit to start at the current tip")
_TICKET = _q("ticket", {"type": "string"},
             description="single-use stream ticket, for browsers that cannot send headers")
_OWN = _q("own_prefix", {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,32}$"},
          description="this client's client_msg_id prefix: its own messages come with "
                      "the next batch instead of on their own")


def document() -> dict[str, Any]:
    acc, conv, ev = ("accounts",), ("conversations",), ("events",)
    push = ("push",)
    paths: dict[str, dict[str, Any]] = {
        "/v1/users": {
            "post": _op("Sign up", 201, _obj(
                ["username", "password"],
                username={"type": "string", "pattern": "^[a-z0-9_.]{3,32}$"},
                password={"type": "string", "minLength": 8, "maxLength": 256},
                display_name={"type": "string", "minLength": 1, "maxLength": 64}),
                auth=False, tags=acc),
            "get": _op("Find a user by username", params=[
                _q("username", {"type": "string"}, True)], tags=acc)},
        "/v1/users/{user_id}": {"get": _op("A user's public profile", params=[_p("user_id")],
                                           tags=acc)},
        "/v1/users/me": {
            "get": _op("My profile", tags=acc),
            "patch": _op("Update my profile", body=_obj(
                [], display_name={"type": "string", "minLength": 1, "maxLength": 64},
                push_previews={"type": "boolean"},
                password={"type": "string", "minLength": 8, "maxLength": 256},
                current_password={"type": "string"}), tags=acc)},
        "/v1/sessions": {"post": _op("Log in", 201, _obj(
            ["username", "password"], username={"type": "string"},
            password={"type": "string"}), auth=False, tags=acc)},
        "/v1/sessions/current": {"delete": _op("Log out (revoke this token)", 204, tags=acc)},
        "/v1/friends": {
            "get": _op("Friends and pending requests", tags=acc),
            "post": _op("Send or accept a friend request", 201, _obj(["user_id"], user_id=_ID),
                        tags=acc)},
        "/v1/friends/{user_id}": {"delete": _op("Unfriend, decline or cancel", 204,
                                                params=[_p("user_id")], tags=acc)},
        "/v1/conversations": {
            "get": _op("My conversations with last message and unread count", tags=conv),
            "post": _op("Open a direct conversation or create a group", 201, {"oneOf": [
                _obj(["kind", "user_id"], kind={"const": "direct"}, user_id=_ID),
                _obj(["kind", "title"], kind={"const": "group"},
                     title={"type": "string", "minLength": 1, "maxLength": 200},
                     member_ids={"type": "array", "items": _ID})]}, tags=conv)},
        "/v1/conversations/{conversation_id}": {
            "get": _op("A conversation, its members and read marks", params=_CONV, tags=conv),
            "patch": _op("My settings of a conversation (muted: no pushes)",
                         body=_obj(["muted"], muted={"type": "boolean"}), params=_CONV,
                         tags=("push",))},
        "/v1/conversations/{conversation_id}/members": {
            "post": _op("Add a member (group admins)", 201, _obj(["user_id"], user_id=_ID),
                        params=_CONV, tags=conv)},
        "/v1/conversations/{conversation_id}/members/{user_id}": {
            "delete": _op("Remove a member, or leave", 204,
                          params=[*_CONV, _p("user_id")], tags=conv)},
        "/v1/conversations/{conversation_id}/messages": {
            "get": _op("History page, oldest first", params=[
                *_CONV, _q("before", _MSG_ID), _q("after", _MSG_ID), _q("around", _MSG_ID),
                _q("limit", {"type": "integer", "minimum": 1, "maximum": 100})], tags=conv),
            "post": _op("Send a message (idempotent by client_msg_id)", 201, _obj(
                ["client_msg_id", "text"],
                client_msg_id={"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"},
                text={"type": "string", "minLength": 1, "maxLength": 100000}),
                params=_CONV, tags=conv)},
        "/v1/conversations/{conversation_id}/read": {
            "post": _op("Move my read mark", body=_obj(["message_id"], message_id=_MSG_ID),
                        params=_CONV, tags=conv)},
        "/v1/conversations/{conversation_id}/typing": {
            "post": _op("Say I am typing (ephemeral)", 202, params=_CONV, tags=conv)},
        "/v1/events": {"get": _op("Poll (wait=0) or long-poll the event log", params=[
            _CURSOR, _q("wait", {"type": "number", "minimum": 0, "maximum": 25}),
            _q("limit", {"type": "integer", "minimum": 1, "maximum": 500}), _OWN],
            tags=ev)},
        "/v1/events/stream": {"get": _op("Server-Sent Events stream", params=[
            _CURSOR, _TICKET, _OWN], tags=ev, content="text/event-stream")},
        "/v1/events/ws": {"get": _op("WebSocket (upgrade)", 101,
                                     params=[_CURSOR, _TICKET, _OWN], tags=ev)},
        "/v1/events/tickets": {"post": _op("A single-use ticket for EventSource/WebSocket",
                                           201, tags=ev)},
        "/v1/devices": {
            "get": _op("My push targets (browsers, webhooks)", tags=push),
            "post": _op("Register a push target (again: updates it)", 201, {"oneOf": [
                _obj(["kind", "subscription"], kind={"const": "webpush"},
                     subscription=_obj(["endpoint", "keys"],
                                       endpoint={"type": "string", "maxLength": 2048},
                                       expirationTime={"type": ["number", "null"]},
                                       keys=_obj(["p256dh", "auth"],
                                                 p256dh={"type": "string"},
                                                 auth={"type": "string"})),
                     label={"type": "string", "minLength": 1, "maxLength": 64}),
                _obj(["kind", "url"], kind={"const": "webhook"},
                     url={"type": "string", "maxLength": 2048},
                     label={"type": "string", "minLength": 1, "maxLength": 64})]},
                        tags=push)},
        "/v1/devices/{device_id}": {"delete": _op("Remove a push target", 204,
                                                  params=[_p("device_id")], tags=push)},
        "/v1/push/vapid-public-key": {"get": _op("The applicationServerKey for "
                                                 "PushManager.subscribe", tags=push)},
        "/v1/presence": {"get": _op("Online status and last seen", params=[
            _q("user_ids", {"type": "string", "pattern": "^[0-9]+(,[0-9]+)*$"}, True)])},
        "/v1/health": {"get": _op("Liveness, engine, this worker's id and drain state",
                                  auth=False)},
        "/v1/discover": {"get": _op("The least-loaded live gateway node, and every live "
                                    "node with its connections (for (re)connecting)",
                                    auth=False)},
        "/v1/ready": {"get": _op("Readiness: databases reachable, not draining", auth=False)},
        "/v1/openapi.json": {"get": _op("This document", auth=False)},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Switchboard", "version": "1.0.0",
                 "description": "Chat API with one event log over WebSocket, SSE, "
                                "long-poll and poll."},
        "paths": paths,
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": _obj(["error"], error=_obj(
                ["code", "message"], code={"type": "string"},
                message={"type": "string"}))}},
    }
