"""Sign-up, login/logout, profile, user lookup, friends."""

from __future__ import annotations

import re

from flask import Blueprint, g, jsonify, request
from sqlalchemy import select

from gateway import accounts
from gateway import validation as v
from gateway.auth import authenticated, check_password, hash_password, issue_token, revoke
from gateway.errors import bad_request, not_found, unauthorized
from gateway.services import services
from storage.db import db
from storage.events import EventType, event
from storage.models import User

bp = Blueprint("accounts", __name__, url_prefix="/v1")

_PASSWORD = {"min_len": 8, "max_len": 256}
_DISPLAY_NAME = {"min_len": 1, "max_len": 64, "strip": True}
# A real hash to compare against for unknown usernames, so a login's timing does not
# reveal whether the name exists.
_DUMMY_HASH: dict[int, str] = {}


def _session_body(token: str, session, user: User) -> dict:
    return {"token": token, "expires_at": session.expires_at, "user": user.private()}


@bp.post("/users")
def sign_up():
    body = v.json_body()
    username = v.string(body, "username", max_len=32).lower()
    if not re.fullmatch(accounts.USERNAME_PATTERN, username):
        raise bad_request("username must be 3-32 characters of a-z, 0-9, '_' or '.'",
                          "invalid_field", field="username")
    password = v.string(body, "password", **_PASSWORD)
    display_name = v.string(body, "display_name", required=False, default=username,
                            **_DISPLAY_NAME)
    user = accounts.create_user(username, password, display_name)
    token, session = issue_token(user.id)
    return jsonify(_session_body(token, session, user)), 201


@bp.post("/sessions")
def log_in():
    body = v.json_body()
    username = v.string(body, "username", max_len=64).lower()
    password = v.string(body, "password", max_len=256)
    user = db.session.scalar(select(User).where(User.username == username))
    if user is None:
        cost = services().settings.password_hash_log2n
        check_password(password, _DUMMY_HASH.setdefault(cost, hash_password("x", cost)))
        raise unauthorized("wrong username or password")
    if not check_password(password, user.password_hash):
        raise unauthorized("wrong username or password")
    token, session = issue_token(user.id)
    return jsonify(_session_body(token, session, user)), 201


@bp.delete("/sessions/current")
@authenticated
def log_out():
    revoke(g.session_id)
    # Live streams opened with this login end too.
    services().broker.publish_ephemeral([g.user_id], event(
        EventType.SESSION_REVOKED, {"session_id": g.session_id}))
    return "", 204


@bp.get("/users/me")
@authenticated
def me():
    return jsonify(accounts.get_user(g.user_id).private())


@bp.patch("/users/me")
@authenticated
def update_me():
    body = v.json_body()
    user = accounts.get_user(g.user_id)
    display_name = v.string(body, "display_name", required=False, **_DISPLAY_NAME)
    previews = v.boolean(body, "push_previews", required=False)
    new_password = v.string(body, "password", required=False, **_PASSWORD)
    if new_password is not None:
        current = v.string(body, "current_password", max_len=256)
        if not check_password(current, user.password_hash):
            raise unauthorized("current_password is wrong")
        user.password_hash = hash_password(new_password, services().settings.password_hash_log2n)
    unknown = set(body) - {"display_name", "push_previews", "password", "current_password"}
    if unknown:
        raise bad_request(f"unknown fields: {', '.join(sorted(unknown))}", "unknown_field")
    if display_name is not None:
        user.display_name = display_name
    if previews is not None:
        user.push_previews = previews
    db.session.commit()
    return jsonify(user.private())


@bp.get("/users")
@authenticated
def find_user():
    username = (request.args.get("username") or "").strip().lower()
    if not username:
        raise bad_request("query parameter 'username' is required", "missing_parameter",
                          parameter="username")
    user = db.session.scalar(select(User).where(User.username == username))
    if user is None:
        raise not_found("user")
    return jsonify(user.public())


@bp.get("/users/<int:user_id>")
@authenticated
def get_user(user_id: int):
    return jsonify(accounts.get_user(user_id).public())


@bp.get("/friends")
@authenticated
def list_friends():
    return jsonify(accounts.friends_view(g.user_id))


@bp.post("/friends")
@authenticated
def add_friend():
    body = v.json_body()
    other = v.integer(body, "user_id")
    status = accounts.add_friend(g.user_id, other)
    return jsonify({"status": status, "user": accounts.get_user(other).public()}), (
        201 if status in ("requested", "accepted") else 200)


@bp.delete("/friends/<int:user_id>")
@authenticated
def remove_friend(user_id: int):
    if not accounts.remove_friend(g.user_id, user_id):
        raise not_found("friend or friend request")
    return "", 204
