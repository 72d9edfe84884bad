"""SharedState contract: sequences, locks, single-use claims, rate limits."""

from __future__ import annotations

from contextlib import contextmanager

import gevent
import gevent.event
import pytest

from storage.state import SendClaim


def _turn_seq(state, conversation_id: int, floor=lambda: 0) -> int:  # type: ignore[no-untyped-def]
    with state.conversation_turn(conversation_id, floor) as turn:
        return turn.seq


def test_turn_seq_starts_from_floor_once(state):
    calls = []

    def floor() -> int:
        calls.append(1)
        return 41

    assert [_turn_seq(state, 5, floor) for _ in range(3)] == [42, 43, 44]
    assert len(calls) == 1
    assert _turn_seq(state, 6) == 1  # conversations count apart


def test_a_started_conversation_counts_from_one_without_asking_history(state):
    def floor() -> int:
        raise AssertionError("history asked for the floor of a new conversation")

    state.start_conversation(12)
    assert _turn_seq(state, 12, floor) == 1
    state.start_conversation(12)  # an existing counter is kept
    assert _turn_seq(state, 12, floor) == 2


def test_turns_exclude_each_other_and_hand_out_every_seq_once(state):
    inside: list[int] = []
    overlaps: list[int] = []
    seqs: list[int] = []

    def sender() -> None:
        with state.conversation_turn(8, lambda: 0) as turn:
            if inside:
                overlaps.append(turn.seq)
            inside.append(turn.seq)
            gevent.sleep(0.001)
            inside.remove(turn.seq)
            seqs.append(turn.seq)

    gevent.joinall([gevent.spawn(sender) for _ in range(40)])
    assert overlaps == []
    assert sorted(seqs) == list(range(1, 41))


def test_turn_records_the_last_id_only_when_set_and_not_on_error(state):
    with state.conversation_turn(9, lambda: 0) as turn:
        assert turn.last_id is None
        turn.new_last_id = 1234567890123456789
    with state.conversation_turn(9, lambda: 0) as turn:
        assert turn.last_id == 1234567890123456789  # 63-bit ids survive exactly
    with pytest.raises(RuntimeError):
        with state.conversation_turn(9, lambda: 0) as turn:
            turn.new_last_id = 1234567890123456999
            raise RuntimeError("send failed")
    with state.conversation_turn(9, lambda: 0) as turn:  # released despite the error
        assert turn.last_id == 1234567890123456789
        assert turn.seq == 4


@contextmanager
def _turn_held_elsewhere(state, conversation_id: int):  # type: ignore[no-untyped-def]
    """Another greenlet holds the conversation's turn until the block ends."""
    entered = gevent.event.Event()
    leave = gevent.event.Event()

    def holder() -> None:
        with state.conversation_turn(conversation_id, lambda: 0):
            entered.set()
            leave.wait(5)

    job = gevent.spawn(holder)
    assert entered.wait(5)
    try:
        yield
    finally:
        leave.set()
        job.join(5)


def test_a_held_turn_times_out_others(state):
    from storage.state_memory import LockTimeout

    with _turn_held_elsewhere(state, 10), pytest.raises(LockTimeout):
        with state.conversation_turn(10, lambda: 0, timeout=0.1):
            pass
    assert _turn_seq(state, 10) == 2


def test_claim_send_remembers_a_settled_send_and_releases_a_failed_one(state):
    first = state.claim_send(1, "a", rate=100, burst=10)
    assert first.outcome == "claimed" and first.token
    assert state.claim_send(1, "a", rate=100, burst=10).outcome == "pending"
    assert state.claim_send(2, "a", rate=100, burst=10).outcome == "claimed"  # per sender
    state.settle_send(1, "a", first.token, '{"id": "1"}', 60)
    assert state.claim_send(1, "a", rate=100, burst=10) == SendClaim("sent", '{"id": "1"}')
    failed = state.claim_send(1, "b", rate=100, burst=10)
    state.settle_send(1, "b", failed.token, None, 0)
    assert state.claim_send(1, "b", rate=100, burst=10).outcome == "claimed"


def test_claim_send_rate_limits_new_sends_but_not_retries(state):
    done = state.claim_send(3, "x1", rate=0.001, burst=2)
    state.settle_send(3, "x1", done.token, '{"id": "9"}', 60)
    assert state.claim_send(3, "x2", rate=0.001, burst=2).outcome == "claimed"
    assert state.claim_send(3, "x3", rate=0.001, burst=2).outcome == "limited"
    assert state.claim_send(3, "x1", rate=0.001, burst=2).outcome == "sent"
    assert state.claim_send(4, "x3", rate=0.001, burst=2).outcome == "claimed"  # per sender


def test_a_lapsed_claim_can_be_taken_over_and_its_owner_settles_nothing(state):
    stale = state.claim_send(5, "slow", rate=100, burst=10, hold=0.05)
    gevent.sleep(0.15)
    fresh = state.claim_send(5, "slow", rate=100, burst=10)
    assert fresh.outcome == "claimed"
    state.settle_send(5, "slow", stale.token, '{"id": "stale"}', 60)
    assert state.claim_send(5, "slow", rate=100, burst=10).outcome == "pending"
    state.settle_send(5, "slow", fresh.token, '{"id": "fresh"}', 60)
    assert state.claim_send(5, "slow", rate=100, burst=10).value == '{"id": "fresh"}'


def test_lock_excludes(state):
    inside = []
    overlaps = []

    def worker(n: int) -> None:
        with state.lock("k"):
            if inside:
                overlaps.append(n)
            inside.append(n)
            gevent.sleep(0.001)
            inside.remove(n)

    gevent.joinall([gevent.spawn(worker, n) for n in range(20)])
    assert overlaps == []


def test_remember_recall_and_claim_once(state):
    assert state.recall("a") is None
    state.remember("a", "1", 60)
    assert state.recall("a") == "1"
    assert state.claim_once("t", 60) is True
    assert state.claim_once("t", 60) is False


def test_forget_drops_a_value(state):
    state.remember("gone", "1", 60)
    state.forget("gone")
    state.forget("never-there")
    assert state.recall("gone") is None


def test_remember_expires(state):
    state.remember("short", "x", 0.05)
    gevent.sleep(0.1)
    assert state.recall("short") is None


@pytest.mark.parametrize("burst", [1, 5])
def test_allow_is_a_token_bucket(state, burst):
    granted = [state.allow(f"r{burst}", 0.001, burst) for _ in range(burst + 3)]
    assert granted == [True] * burst + [False] * 3


def test_a_token_bucket_refills_at_its_rate_up_to_its_burst(state):
    assert [state.allow("refill", 20.0, 2) for _ in range(3)] == [True, True, False]
    gevent.sleep(0.06)  # 1.2 tokens back (more on a slow machine, never over 2)
    assert state.allow("refill", 20.0, 2)
    gevent.sleep(0.3)  # far past a full refill: the burst again, and no more
    assert [state.allow("refill", 20.0, 2) for _ in range(3)] == [True, True, False]


def test_worker_id_in_range(state):
    assert 0 <= state.worker_id() < 1024


def _sending(state, sender: int, key: str, conversation: int, **kw):  # type: ignore[no-untyped-def]
    options = {"floor": lambda: 0, "rate": 100.0, "burst": 10, "ttl": 60.0, **kw}
    return state.sending(sender, key, conversation, **options)


def test_sending_claims_takes_the_turn_and_settles_on_leaving(state):
    with _sending(state, 1, "m1", 20) as sending:
        assert sending.claim.outcome == "claimed" and sending.turn is not None
        assert sending.turn.seq == 1
        sending.turn.new_last_id = 500
        sending.message = '{"id": "500"}'
    with _sending(state, 1, "m1", 20) as retry:  # a retry gets the remembered message
        assert retry.claim == SendClaim("sent", '{"id": "500"}') and retry.turn is None
    with _sending(state, 2, "m2", 20) as after:  # the turn was handed back, id recorded
        assert after.turn is not None and (after.turn.seq, after.turn.last_id) == (2, 500)


def test_sending_that_raises_releases_or_remembers_by_durability(state):
    with pytest.raises(RuntimeError):
        with _sending(state, 3, "lost", 21):
            raise RuntimeError("failed before the message was durable")
    with _sending(state, 3, "lost", 21) as again:  # not durable: a retry may send
        assert again.claim.outcome == "claimed" and again.turn is not None
        assert again.turn.seq == 2  # the failed turn's seq is skipped, never reused
    with pytest.raises(RuntimeError):
        with _sending(state, 3, "kept", 21) as sending:
            sending.turn.new_last_id = 900
            sending.message = '{"id": "900"}'
            raise RuntimeError("fan-out failed after the message was durable")
    with _sending(state, 3, "kept", 21) as retry:
        assert retry.claim == SendClaim("sent", '{"id": "900"}')
    with _sending(state, 4, "next", 21) as after:
        # A turn that raised records no last id.
        assert after.turn is not None and after.turn.last_id is None


def test_sending_without_a_claim_never_holds_the_conversation(state):
    with _sending(state, 5, "dup", 22) as first:
        with _sending(state, 5, "dup", 22) as pending:  # the same key, concurrently
            assert pending.claim.outcome == "pending" and pending.turn is None
        first.message = '{"id": "1"}'
    with _sending(state, 6, "a", 22, rate=0.001, burst=1):
        pass
    with _sending(state, 6, "b", 22, rate=0.001, burst=1) as limited:
        assert limited.claim.outcome == "limited" and limited.turn is None
    with _sending(state, 7, "c", 22) as free:  # nobody left the conversation locked
        assert free.turn is not None


def test_sending_that_gets_no_turn_times_out_and_releases_its_claim(state):
    from storage.state_memory import LockTimeout

    with _turn_held_elsewhere(state, 23), pytest.raises(LockTimeout):
        with _sending(state, 8, "late", 23, timeout=0.1):
            pass
    with _sending(state, 8, "late", 23) as retry:
        assert retry.claim.outcome == "claimed" and retry.turn is not None


class TurnCheckingBroker:
    """Records appends and whether the conversation's turn was still held then."""

    def __init__(self, state, conversation: int) -> None:  # type: ignore[no-untyped-def]
        self.state = state
        self.conversation = conversation
        self.appended: list[tuple[list[int], dict, bool]] = []

    def append(self, users, payload):  # type: ignore[no-untyped-def]
        from storage.state_memory import LockTimeout

        try:
            with _sending(self.state, 99, f"probe{len(self.appended)}", self.conversation,
                          timeout=0.05):
                held = False
        except LockTimeout:
            held = True
        self.appended.append((users, payload, held))
        return {}


def test_sending_fans_out_while_the_turn_is_held_and_not_after_a_failure(state):
    broker = TurnCheckingBroker(state, 24)
    with _sending(state, 9, "fan", 24) as sending:
        sending.message = '{"id": "1"}'
        sending.fan_out = (broker, [9, 10], {"type": "message.created"})
    # Appended once, while another send could not take the turn (the probe timed out).
    assert broker.appended == [([9, 10], {"type": "message.created"}, True)]
    with pytest.raises(RuntimeError):
        with _sending(state, 9, "fan2", 24) as failed:
            failed.fan_out = (broker, [9], {"type": "message.created"})
            raise RuntimeError("not durable")
    assert len(broker.appended) == 1


def test_fill_never_caches_over_a_value_or_a_recent_forget(state):
    state.fill("k", "v1", 60)
    assert state.recall("k") == "v1"
    state.fill("k", "v2", 60)  # another reader's fill: the first one stays
    assert state.recall("k") == "v1"
    state.forget("k")  # the source changed
    assert state.recall("k") is None
    state.fill("k", "read before the change", 60)
    assert state.recall("k") is None
    state.remember("k", "written", 60)  # explicit writes (a revocation) still win
    assert state.recall("k") == "written"


def test_fill_works_again_once_the_forget_is_old(state):
    state.forgotten_for = 0.2
    state.forget("k")
    state.fill("k", "too early", 60)
    assert state.recall("k") is None
    gevent.sleep(0.3)
    state.fill("k", "fresh", 60)
    assert state.recall("k") == "fresh"
