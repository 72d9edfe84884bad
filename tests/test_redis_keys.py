"""KeySpace's pre-bound send-path keys name exactly what the templates name."""

from __future__ import annotations

import pytest

from storage import redis_keys as k


@pytest.mark.parametrize("prefix", ["sb", "t-1:x", "odd%prefix%s"])
def test_bound_keys_equal_the_templates(prefix):
    keys = k.KeySpace(prefix)
    for user in (1, 987654321):
        assert keys.user(user) == tuple(t.format(prefix=prefix, user_id=user) for t in (
            k.USER_LOG, k.USER_OFFSET, k.USER_EPOCH))
        assert keys.channel(user) == k.USER_CHANNEL.format(prefix=prefix, user_id=user)
        assert keys.conversation(user) == [
            t.format(prefix=prefix, conversation_id=user)
            for t in (k.CONVERSATION_LOCK, k.CONVERSATION_SEQ, k.CONVERSATION_LAST_ID)]
        for client_msg_id in ("c1", "a%sb", "%(user_id)s", "{x}", "é 😀"):
            assert keys.sends(user, client_msg_id) == [
                k.SEND_RECORD.format(prefix=prefix, user_id=user, client_msg_id=client_msg_id),
                k.SEND_BUCKET.format(prefix=prefix, user_id=user)]
    assert keys.user(5)[0] == f"{prefix}:{{u:5}}:log"  # the hash tag survives binding
