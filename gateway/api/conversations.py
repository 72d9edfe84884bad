"""Conversations, members, messages, read receipts, typing."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify, request

from gateway import chat
from gateway import conversations as conv
from gateway import validation as v
from gateway.auth import authenticated
from gateway.errors import bad_request
from gateway.services import services

bp = Blueprint("conversations", __name__, url_prefix="/v1/conversations")

CLIENT_MSG_ID_PATTERN = r"[A-Za-z0-9_.:\-]{1,64}"


def parse_send(body: dict[str, Any]) -> tuple[str, str]:
    """(client_msg_id, text) from a send request; shared with the WebSocket frame."""
    client_msg_id = v.string(body, "client_msg_id", min_len=1, max_len=64,
                             pattern=CLIENT_MSG_ID_PATTERN)
    text = v.string(body, "text", max_len=services().settings.max_text_length)
    if not text.strip():
        raise bad_request("'text' must not be empty", "invalid_field", field="text")
    return client_msg_id, text


def parse_message_id(body: dict[str, Any], name: str = "message_id") -> int:
    raw = body.get(name)
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str):
        raise bad_request(f"'{name}' is required (a message id)", "missing_field", field=name)
    return v.path_message_id(raw, name)


@bp.get("")
@authenticated
def list_conversations():
    return jsonify({"conversations": conv.my_conversations(g.user_id)})


@bp.post("")
@authenticated
def create_conversation():
    body = v.json_body()
    kind = v.string(body, "kind", max_len=10)
    if kind == "direct":
        other = v.integer(body, "user_id")
        conversation, created = conv.open_direct(g.user_id, other)
        return jsonify(conv.view(conversation)), 201 if created else 200
    if kind == "group":
        title = v.string(body, "title", min_len=1, strip=True,
                         max_len=services().settings.max_title_length)
        members = v.id_list(body, "member_ids", required=False)
        return jsonify(conv.view(conv.create_group(g.user_id, title, members))), 201
    raise bad_request("'kind' must be 'direct' or 'group'", "invalid_field", field="kind")


@bp.get("/<int:conversation_id>")
@authenticated
def get_conversation(conversation_id: int):
    conversation, _ = conv.require_member(conversation_id, g.user_id)
    marks = services().history.watermarks(conversation_id)
    return jsonify({**conv.view(conversation), "read": {
        str(u): {"seq": m.seq, "message_id": str(m.message_id)} for u, m in marks.items()}})


@bp.post("/<int:conversation_id>/members")
@authenticated
def add_member(conversation_id: int):
    body = v.json_body()
    user_id = v.integer(body, "user_id")
    added = conv.add_member(g.user_id, conversation_id, user_id)
    conversation, _ = conv.require_member(conversation_id, g.user_id)
    return jsonify(conv.view(conversation)), 201 if added else 200


@bp.delete("/<int:conversation_id>/members/<int:user_id>")
@authenticated
def remove_member(conversation_id: int, user_id: int):
    conv.remove_member(g.user_id, conversation_id, user_id)
    return "", 204


@bp.get("/<int:conversation_id>/messages")
@authenticated
def list_messages(conversation_id: int):
    anchors = {name: v.path_message_id(request.args.get(name), name)
               for name in ("before", "after", "around")}
    given = [name for name, value in anchors.items() if value is not None]
    if len(given) > 1:
        raise bad_request("use at most one of before, after, around", "invalid_parameter")
    limit = v.query_int("limit", default=50, minimum=1,
                        maximum=services().settings.history_page_limit)
    page = chat.history_page(g.user_id, conversation_id, limit=limit, **anchors)
    return jsonify({"messages": [m.to_json() for m in page]})


@bp.post("/<int:conversation_id>/messages")
@authenticated
def send(conversation_id: int):
    client_msg_id, text = parse_send(v.json_body())
    message, created = chat.send_message(g.user_id, conversation_id, client_msg_id, text)
    return jsonify(message.to_json()), 201 if created else 200


@bp.post("/<int:conversation_id>/read")
@authenticated
def mark_read(conversation_id: int):
    message_id = parse_message_id(v.json_body())
    mark = chat.mark_read(g.user_id, conversation_id, message_id)
    return jsonify({"conversation_id": conversation_id, "seq": mark.seq,
                    "message_id": str(mark.message_id)})


@bp.post("/<int:conversation_id>/typing")
@authenticated
def typing(conversation_id: int):
    return jsonify({"delivered": chat.typing(g.user_id, conversation_id)}), 202
