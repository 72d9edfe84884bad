"""Direct chats and groups: membership rules, apart from HTTP."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from gateway.accounts import get_user
from gateway.errors import ApiError, bad_request, forbidden, not_found
from gateway.services import services
from storage.db import db
from storage.events import EventType, event
from storage.models import Conversation, ConversationKind, Membership, Role, User

# Member lists are read on every send and change rarely: kept in SharedState and
# dropped whenever membership changes, in every process.
_MEMBERS_TTL = 600


def _members_key(conversation_id: int) -> str:
    return f"members:{conversation_id}"


def member_ids(conversation_id: int) -> list[int]:
    """The conversation's members (cached); 404 if the conversation does not exist."""
    state = services().state
    cached = state.recall(_members_key(conversation_id))
    if cached is not None:
        return [int(u) for u in cached.split(",") if u]
    if db.session.get(Conversation, conversation_id) is None:
        raise not_found("conversation")
    members = list(db.session.scalars(select(Membership.user_id).where(
        Membership.conversation_id == conversation_id)))
    # fill, not remember: a membership change committed since this read has forgotten
    # the key, and the list read before it must not be cached over that.
    state.fill(_members_key(conversation_id), ",".join(map(str, members)), _MEMBERS_TTL)
    return members


def require_member_fast(conversation_id: int, user_id: int) -> list[int]:
    """Membership check on the hot path (sends, reads, typing); returns the members."""
    members = member_ids(conversation_id)
    if user_id not in members:
        raise forbidden("you are not a member of this conversation")
    return members


def _started(conversation_id: int, members: list[int]) -> None:
    """A conversation nobody knows of yet: prime its member cache and start its seq at
    0, so its first message asks the database nothing. Before it is announced, no
    other request can change either."""
    state = services().state
    unique = ",".join(map(str, dict.fromkeys(members)))
    state.remember(_members_key(conversation_id), unique, _MEMBERS_TTL)
    state.start_conversation(conversation_id)


def _members_changed(conversation_id: int) -> None:
    services().state.forget(_members_key(conversation_id))


def require_member(conversation_id: int, user_id: int) -> tuple[Conversation, Membership]:
    conversation = db.session.get(Conversation, conversation_id)
    if conversation is None:
        raise not_found("conversation")
    membership = db.session.get(Membership, (conversation_id, user_id))
    if membership is None:
        raise forbidden("you are not a member of this conversation")
    return conversation, membership


def view(conversation: Conversation) -> dict:
    rows = db.session.execute(
        select(User, Membership.role).join(Membership, Membership.user_id == User.id)
        .where(Membership.conversation_id == conversation.id)
        .order_by(Membership.joined_at, User.id)).all()
    return {"id": conversation.id, "kind": conversation.kind, "title": conversation.title,
            "created_by": conversation.created_by, "created_at": conversation.created_at,
            "members": [{**user.public(), "role": role} for user, role in rows]}


def _announce(kind: EventType, user_ids: list[int], data: dict) -> None:
    services().broker.append(user_ids, event(kind, data))


def open_direct(me: int, other_id: int) -> tuple[Conversation, bool]:
    """The one direct conversation of this pair, created on first ask."""
    if other_id == me:
        raise bad_request("a direct conversation needs another user", "invalid_field",
                          field="user_id")
    get_user(other_id)
    key = f"{min(me, other_id)}:{max(me, other_id)}"
    existing = db.session.scalar(select(Conversation).where(Conversation.direct_key == key))
    if existing is not None:
        return existing, False
    conversation = Conversation(kind=ConversationKind.DIRECT.value, created_by=me,
                                direct_key=key)
    db.session.add(conversation)
    try:
        db.session.flush()
        db.session.add_all([Membership(conversation_id=conversation.id, user_id=u,
                                       role=Role.MEMBER.value) for u in (me, other_id)])
        db.session.commit()
    except IntegrityError:  # the other side opened it at the same moment
        db.session.rollback()
        existing = db.session.scalar(select(Conversation).where(Conversation.direct_key == key))
        if existing is None:
            raise
        return existing, False
    _started(conversation.id, [me, other_id])
    _announce(EventType.CONVERSATION_CREATED, [me, other_id], view(conversation))
    return conversation, True


def create_group(me: int, title: str, members: list[int]) -> Conversation:
    cap = services().settings.max_group_members
    others = [u for u in members if u != me]
    if len(others) + 1 > cap:
        raise ApiError(422, "group_full", f"a group has at most {cap} members")
    found = set(db.session.scalars(select(User.id).where(User.id.in_(others))))
    missing = [u for u in others if u not in found]
    if missing:
        raise ApiError(404, "not_found", "unknown users", user_ids=missing)
    conversation = Conversation(kind=ConversationKind.GROUP.value, title=title, created_by=me)
    db.session.add(conversation)
    db.session.flush()
    db.session.add(Membership(conversation_id=conversation.id, user_id=me,
                              role=Role.ADMIN.value))
    db.session.add_all([Membership(conversation_id=conversation.id, user_id=u,
                                   role=Role.MEMBER.value) for u in others])
    db.session.commit()
    _started(conversation.id, [me, *others])
    _announce(EventType.CONVERSATION_CREATED, [me, *others], view(conversation))
    return conversation


def _require_group_admin(conversation: Conversation, membership: Membership) -> None:
    if conversation.kind != ConversationKind.GROUP.value:
        raise ApiError(422, "not_a_group", "direct conversations have fixed members")
    if membership.role != Role.ADMIN.value:
        raise forbidden("only group admins can do this")


def add_member(me: int, conversation_id: int, user_id: int) -> bool:
    conversation, membership = require_member(conversation_id, me)
    _require_group_admin(conversation, membership)
    get_user(user_id)
    if db.session.get(Membership, (conversation_id, user_id)) is not None:
        return False
    cap = services().settings.max_group_members
    with services().state.lock(f"members:{conversation_id}"):
        count = db.session.scalar(select(func.count()).select_from(Membership).where(
            Membership.conversation_id == conversation_id))
        if count >= cap:
            raise ApiError(422, "group_full", f"a group has at most {cap} members")
        db.session.add(Membership(conversation_id=conversation_id, user_id=user_id,
                                  role=Role.MEMBER.value))
        try:
            db.session.commit()
        except IntegrityError:  # added concurrently by another admin
            db.session.rollback()
            return False
        _members_changed(conversation_id)
    _announce(EventType.MEMBER_ADDED, member_ids(conversation_id),
              {"conversation": view(conversation), "user_id": user_id, "by": me})
    return True


def remove_member(me: int, conversation_id: int, user_id: int) -> None:
    """An admin removes someone, or anyone removes themself (leaving)."""
    conversation, membership = require_member(conversation_id, me)
    if user_id != me:
        _require_group_admin(conversation, membership)
    elif conversation.kind != ConversationKind.GROUP.value:
        raise ApiError(422, "not_a_group", "you cannot leave a direct conversation")
    target = db.session.get(Membership, (conversation_id, user_id))
    if target is None:
        raise not_found("member")
    before = member_ids(conversation_id)
    db.session.delete(target)
    db.session.flush()
    _keep_an_admin(conversation_id)
    db.session.commit()
    _members_changed(conversation_id)
    _announce(EventType.MEMBER_REMOVED, before,
              {"conversation_id": conversation_id, "user_id": user_id, "by": me})


def _keep_an_admin(conversation_id: int) -> None:
    # A group whose last admin left would be unmanageable: promote the longest member.
    has_admin = db.session.scalar(select(Membership.user_id).where(
        Membership.conversation_id == conversation_id, Membership.role == Role.ADMIN.value))
    if has_admin is None:
        oldest = db.session.scalar(select(Membership).where(
            Membership.conversation_id == conversation_id)
            .order_by(Membership.joined_at, Membership.user_id))
        if oldest is not None:
            oldest.role = Role.ADMIN.value


def my_conversations(me: int) -> list[dict]:
    svc = services()
    rows = db.session.execute(
        select(Conversation, Membership.muted)
        .join(Membership, Membership.conversation_id == Conversation.id)
        .where(Membership.user_id == me)).all()
    result = []
    for conversation, muted in rows:
        last = svc.history.latest(conversation.id)
        mark = svc.history.watermarks(conversation.id, [me]).get(me)
        read_seq = mark.seq if mark else 0
        result.append({**view(conversation),
                       "last_message": last.to_json() if last else None,
                       "unread_count": max(0, (last.seq if last else 0) - read_seq),
                       "read_seq": read_seq, "muted": bool(muted)})
    result.sort(key=lambda c: (c["last_message"] or {}).get("created_at") or c["created_at"],
                reverse=True)
    return result
