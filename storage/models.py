"""Relational models: users, sessions, friends, conversations, memberships, devices."""

from __future__ import annotations

import enum
import time

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from storage.db import db


def now_ms() -> int:
    return int(time.time() * 1000)


# 64-bit ids on PostgreSQL (the API accepts any id below 2**63); SQLite needs its
# INTEGER PRIMARY KEY spelling for row ids, which are 64-bit there anyway.
Id = BigInteger().with_variant(Integer(), "sqlite")


class ConversationKind(str, enum.Enum):
    DIRECT = "direct"
    GROUP = "group"


class Role(str, enum.Enum):
    ADMIN = "admin"
    MEMBER = "member"


class User(db.Model):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    username: Mapped[str] = mapped_column(String(32), unique=True)
    display_name: Mapped[str] = mapped_column(String(64))
    password_hash: Mapped[str] = mapped_column(String(200))
    # Push notifications show message text unless the user turns previews off.
    push_previews: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)

    def public(self) -> dict:
        return {"id": self.id, "username": self.username, "display_name": self.display_name}

    def private(self) -> dict:
        return {**self.public(), "push_previews": self.push_previews,
                "created_at": self.created_at}


class AuthSession(db.Model):
    """One login. The token names it, so logging out (revoking it) ends that token."""
    __tablename__ = "auth_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(Id, ForeignKey("users.id"), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, default=None)


class FriendRequest(db.Model):
    __tablename__ = "friend_requests"
    from_id: Mapped[int] = mapped_column(Id, ForeignKey("users.id"), primary_key=True)
    to_id: Mapped[int] = mapped_column(Id, ForeignKey("users.id"), primary_key=True, index=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)


class Friendship(db.Model):
    """Stored in both directions so "my friends" is one indexed lookup."""
    __tablename__ = "friendships"
    user_id: Mapped[int] = mapped_column(Id, ForeignKey("users.id"), primary_key=True)
    friend_id: Mapped[int] = mapped_column(Id, ForeignKey("users.id"), primary_key=True)
    since: Mapped[int] = mapped_column(BigInteger, default=now_ms)


class Conversation(db.Model):
    __tablename__ = "conversations"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))
    title: Mapped[str | None] = mapped_column(String(200), default=None)
    created_by: Mapped[int] = mapped_column(Id, ForeignKey("users.id"))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)
    # "low:high" user ids for direct chats; the unique index makes "exactly one direct
    # conversation per pair" hold under concurrent creation too.
    direct_key: Mapped[str | None] = mapped_column(String(64), unique=True, default=None)


class Membership(db.Model):
    __tablename__ = "memberships"
    conversation_id: Mapped[int] = mapped_column(
        Id, ForeignKey("conversations.id"), primary_key=True)
    user_id: Mapped[int] = mapped_column(Id, ForeignKey("users.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(10), default=Role.MEMBER.value)
    joined_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)
    muted: Mapped[bool] = mapped_column(default=False)

    __table_args__ = (Index("ix_memberships_user", "user_id", "conversation_id"),)



class DeviceKind(str, enum.Enum):
    WEBPUSH = "webpush"
    WEBHOOK = "webhook"


class Device(db.Model):
    """A push target of one user: a browser's Web Push subscription or a webhook URL."""
    __tablename__ = "devices"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    user_id: Mapped[int] = mapped_column(Id, ForeignKey("users.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    endpoint: Mapped[str] = mapped_column(String(2048))
    # sha256 of the endpoint: a short unique key (endpoints are too long to index well).
    endpoint_hash: Mapped[str] = mapped_column(String(64), index=True)
    label: Mapped[str | None] = mapped_column(String(64), default=None)
    # Web Push: the browser's P-256 public key and auth secret (base64url).
    p256dh: Mapped[str | None] = mapped_column(String(128), default=None)
    auth: Mapped[str | None] = mapped_column(String(64), default=None)
    # Webhook: the HMAC key, shown to the user once, at registration.
    secret: Mapped[str | None] = mapped_column(String(128), default=None)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)

    __table_args__ = (UniqueConstraint("user_id", "endpoint_hash"),)

    def view(self) -> dict:
        return {"id": self.id, "kind": self.kind, "endpoint": self.endpoint,
                "label": self.label, "created_at": self.created_at}


__all__ = ["AuthSession", "Conversation", "ConversationKind", "Device", "DeviceKind",
           "FriendRequest", "Friendship", "Membership", "Role", "User", "now_ms"]
