"""Users, logins and friends: the account rules, apart from HTTP."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from gateway.errors import bad_request, conflict, not_found
from gateway.services import services
from storage.db import db
from storage.events import EventType, event
from storage.models import FriendRequest, Friendship, User

USERNAME_PATTERN = r"[a-z0-9_.]{3,32}"


def create_user(username: str, password: str, display_name: str) -> User:
    from gateway.auth import hash_password

    if db.session.scalar(select(User.id).where(User.username == username)) is not None:
        raise conflict(f"username '{username}' is taken", "username_taken")
    user = User(username=username, display_name=display_name,
                password_hash=hash_password(password, services().settings.password_hash_log2n))
    db.session.add(user)
    try:
        db.session.commit()
    except IntegrityError:  # a concurrent sign-up took the name between check and insert
        db.session.rollback()
        raise conflict(f"username '{username}' is taken", "username_taken") from None
    return user


def get_user(user_id: int) -> User:
    user = db.session.get(User, user_id)
    if user is None:
        raise not_found("user")
    return user


def friend_ids(user_id: int) -> list[int]:
    return list(db.session.scalars(
        select(Friendship.friend_id).where(Friendship.user_id == user_id)))


def are_friends(a: int, b: int) -> bool:
    return db.session.get(Friendship, (a, b)) is not None


def add_friend(me: int, other_id: int) -> str:
    """Send a request, or accept theirs. Returns "requested", "accepted" or "friends"."""
    if other_id == me:
        raise bad_request("you cannot befriend yourself", "invalid_field", field="user_id")
    get_user(other_id)
    if are_friends(me, other_id):
        return "friends"
    broker = services().broker
    theirs = db.session.get(FriendRequest, (other_id, me))
    if theirs is None:
        if db.session.get(FriendRequest, (me, other_id)) is None:
            db.session.add(FriendRequest(from_id=me, to_id=other_id))
            _commit_ignoring_races()
            broker.append([other_id], event(EventType.FRIEND_REQUEST,
                                            {"user": get_user(me).public()}))
        return "requested"
    db.session.delete(theirs)
    db.session.add_all([Friendship(user_id=me, friend_id=other_id),
                        Friendship(user_id=other_id, friend_id=me)])
    _commit_ignoring_races()
    broker.append([me], event(EventType.FRIEND_ADDED, {"user": get_user(other_id).public()}))
    broker.append([other_id], event(EventType.FRIEND_ADDED, {"user": get_user(me).public()}))
    return "accepted"


def remove_friend(me: int, other_id: int) -> bool:
    """Unfriend, decline their request or cancel mine. False when there was nothing."""
    removed = 0
    pair_f = ((Friendship.user_id == me) & (Friendship.friend_id == other_id)) | (
        (Friendship.user_id == other_id) & (Friendship.friend_id == me))
    pair_r = ((FriendRequest.from_id == me) & (FriendRequest.to_id == other_id)) | (
        (FriendRequest.from_id == other_id) & (FriendRequest.to_id == me))
    for stmt in (delete(Friendship).where(pair_f), delete(FriendRequest).where(pair_r)):
        removed += db.session.execute(stmt).rowcount
    db.session.commit()
    if removed:
        services().broker.append([me, other_id], event(EventType.FRIEND_REMOVED,
                                                       {"user_ids": [me, other_id]}))
    return bool(removed)


def friends_view(me: int) -> dict:
    friends = db.session.scalars(select(User).join(Friendship, Friendship.friend_id == User.id)
                                 .where(Friendship.user_id == me).order_by(User.username)).all()
    incoming = db.session.scalars(select(User).join(FriendRequest, FriendRequest.from_id == User.id)
                                  .where(FriendRequest.to_id == me)).all()
    outgoing = db.session.scalars(select(User).join(FriendRequest, FriendRequest.to_id == User.id)
                                  .where(FriendRequest.from_id == me)).all()
    status = services().presence.status([u.id for u in friends])
    return {
        "friends": [{**u.public(), "online": status[u.id].online,
                     "last_seen": status[u.id].last_seen} for u in friends],
        "incoming": [u.public() for u in incoming],
        "outgoing": [u.public() for u in outgoing],
    }


def _commit_ignoring_races() -> None:
    # Two identical requests racing: the second insert hits the primary key; the state
    # both wanted exists, so that is success, not an error.
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
