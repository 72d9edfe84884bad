"""Passwords, bearer tokens, stream tickets, and the ``authenticated`` decorator.

Tokens are signed (itsdangerous) and name a server-side session, so logging out
revokes them at once. Browsers' EventSource and WebSocket cannot send headers: they
trade their token for a single-use ticket valid for ``ticket_ttl`` seconds, which is
all that ever appears in a stream URL.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from flask import current_app, g, request
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from gateway.errors import unauthorized
from gateway.services import services
from storage.db import db, release_session
from storage.models import AuthSession, now_ms

F = TypeVar("F", bound=Callable[..., Any])
_SCRYPT_R, _SCRYPT_P = 8, 1


def hash_password(password: str, log2n: int) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=1 << log2n, r=_SCRYPT_R,
                            p=_SCRYPT_P, maxmem=256 * 1024 * 1024, dklen=32)
    return f"scrypt${log2n}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, log2n, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    candidate = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=1 << int(log2n),
                               r=_SCRYPT_R, p=_SCRYPT_P, maxmem=256 * 1024 * 1024, dklen=32)
    return hmac.compare_digest(candidate.hex(), digest)


def _serializer(purpose: str) -> URLSafeTimedSerializer:
    return _serializer_for(current_app.config["SECRET_KEY"], purpose)


@functools.lru_cache(maxsize=16)
def _serializer_for(secret_key: str, purpose: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key, salt=f"switchboard.{purpose}")


@functools.lru_cache(maxsize=20_000)
def _verified_token(secret_key: str, token: str) -> tuple[Any, int]:
    """A token's data and signing time, once its signature checked out (a bad one
    raises, and is never cached). Clients send the same token on every request: the
    signature is checked once per process, its age on every use."""
    data, signed_at = _serializer_for(secret_key, "access").loads(token, return_timestamp=True)
    return data, int(signed_at.timestamp())


def issue_token(user_id: int) -> tuple[str, AuthSession]:
    ttl = services().settings.token_ttl
    session = AuthSession(id=secrets.token_hex(16), user_id=user_id,
                          expires_at=now_ms() + ttl * 1000)
    db.session.add(session)
    db.session.commit()
    return _serializer("access").dumps({"u": user_id, "s": session.id}), session


def issue_ticket(user_id: int, session_id: str) -> str:
    return _serializer("ticket").dumps(
        {"u": user_id, "s": session_id, "n": secrets.token_hex(8)})


class LiveSession(NamedTuple):
    id: str
    user_id: int


# A validated session is remembered this long in SharedState, so a request costs one
# Redis GET (or a dict lookup) instead of a database query. Logging out overwrites the
# entry at once, in every process, so revocation stays immediate.
_SESSION_CACHE_TTL = 300
_REVOKED = "revoked"


def _session_key(session_id: str) -> str:
    return f"session:{session_id}"


def _live_session(user_id: Any, session_id: Any) -> LiveSession:
    if (not isinstance(user_id, int) or isinstance(user_id, bool)
            or not isinstance(session_id, str)):
        raise unauthorized("malformed credentials")
    state = services().state
    cached = state.recall(_session_key(session_id))
    if cached == _REVOKED:
        raise unauthorized("session expired or revoked")
    if cached is None:
        row = db.session.get(AuthSession, session_id)
        if row is None or row.revoked_at is not None:
            raise unauthorized("session expired or revoked")
        cached = f"{row.user_id}:{row.expires_at}"
        # fill: a logout since this read has marked the session revoked, which wins.
        state.fill(_session_key(session_id), cached, _SESSION_CACHE_TTL)
    owner, _, expires_at = cached.partition(":")
    if int(owner) != user_id or int(expires_at) < now_ms():
        raise unauthorized("session expired or revoked")
    return LiveSession(session_id, user_id)


def _from_token(token: str) -> LiveSession:
    try:
        data, signed_at = _verified_token(current_app.config["SECRET_KEY"], token)
    except BadSignature:
        raise unauthorized("invalid token") from None
    age = time.time() - signed_at
    if age > services().settings.token_ttl or age < 0:
        raise unauthorized("token expired")
    if not isinstance(data, dict):
        raise unauthorized("invalid token")
    return _live_session(data.get("u"), data.get("s"))


def _from_ticket(ticket: str) -> LiveSession:
    settings = services().settings
    try:
        data = _serializer("ticket").loads(ticket, max_age=settings.ticket_ttl)
    except SignatureExpired:
        raise unauthorized("ticket expired") from None
    except BadSignature:
        raise unauthorized("invalid ticket") from None
    if not isinstance(data, dict) or not isinstance(data.get("n"), str):
        raise unauthorized("invalid ticket")
    session = _live_session(data.get("u"), data.get("s"))
    if not services().state.claim_once(f"ticket:{data['n']}", settings.ticket_ttl + 5):
        raise unauthorized("ticket already used")
    return session


def authenticate(allow_ticket: bool = False) -> LiveSession:
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("expected 'Authorization: Bearer <token>'")
        session = _from_token(token.strip())
    elif allow_ticket and request.args.get("ticket"):
        session = _from_ticket(request.args["ticket"])
    else:
        raise unauthorized()
    g.user_id = session.user_id
    g.session_id = session.id
    # Hand the session lookup's database connection back first: a presence transition
    # looks up friends on a connection of its own, and a request holding one connection
    # while waiting for a second deadlocks the pool under a burst of logins.
    release_session()
    services().presence.touch(session.user_id)
    return session


def authenticated(view: F) -> F:
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        authenticate()
        return view(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


def revoke(session_id: str) -> None:
    services().state.remember(_session_key(session_id), _REVOKED,
                              services().settings.token_ttl)
    session = db.session.get(AuthSession, session_id)
    if session is not None and session.revoked_at is None:
        session.revoked_at = now_ms()
        db.session.commit()
