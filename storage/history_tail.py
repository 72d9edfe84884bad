"""History reads that include messages acknowledged but not yet persisted.

Wraps the real store: writes pass through; reads merge the store's page with the
conversation's Redis tail (see storage/persist_buffer.py), so a sender reads their own
write even while the workers are behind or the store is down.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from storage.history import HistoryStore, InboxEntry, Message, Watermark
from storage.persist_buffer import PersistBuffer


class TailedHistory(HistoryStore):
    def __init__(self, store: HistoryStore, buffer: PersistBuffer) -> None:
        self.inner = store
        self.buffer = buffer

    def store(self, messages: Sequence[Message]) -> None:
        self.inner.store(messages)

    def store_sent(self, messages: Sequence[Message], member_ids: Sequence[int]) -> None:
        self.inner.store_sent(messages, member_ids)

    def store_drained(self, batch: Sequence[Message], marks: Sequence[Watermark],
                      entries: Sequence[tuple[Sequence[int], Message]]) -> None:
        self.inner.store_drained(batch, marks, entries)

    def get(self, conversation_id: int, message_id: int) -> Message | None:
        found = self.inner.get(conversation_id, message_id)
        if found is None:
            found = next((m for m in self.buffer.tail(conversation_id) if m.id == message_id),
                         None)
        return found

    def page(self, conversation_id: int, *, before: int | None = None,
             after: int | None = None, around: int | None = None,
             limit: int = 50) -> list[Message]:
        tail = self.buffer.tail(conversation_id)
        if not tail:
            return self.inner.page(conversation_id, before=before, after=after,
                                   around=around, limit=limit)
        anchor_id = before if before is not None else after if after is not None else around
        anchor_seq = None
        if anchor_id is not None:
            anchor = self.get(conversation_id, anchor_id)
            if anchor is None:
                raise KeyError(anchor_id)
            anchor_seq = anchor.seq
        try:
            stored = self.inner.page(conversation_id, before=before, after=after,
                                     around=around, limit=limit)
        except KeyError:  # the anchor is only in the tail
            stored = self._store_page_by_seq(conversation_id, anchor_seq, before, after,
                                             around, limit)
        merged = {m.id: m for m in stored}
        for message in tail:
            merged.setdefault(message.id, message)
        ordered = sorted(merged.values(), key=lambda m: m.seq)
        if anchor_seq is None:
            return ordered[-limit:]
        if before is not None:
            return [m for m in ordered if m.seq < anchor_seq][-limit:]
        if after is not None:
            return [m for m in ordered if m.seq > anchor_seq][:limit]
        older = [m for m in ordered if m.seq <= anchor_seq][-(limit - (limit - 1) // 2):]
        newer = [m for m in ordered if m.seq > anchor_seq][:limit - len(older)]
        return older + newer

    def _store_page_by_seq(self, conversation_id: int, anchor_seq: int | None,
                           before: int | None, after: int | None, around: int | None,
                           limit: int) -> list[Message]:
        # The anchor is newer than anything stored: "before/around" it is the latest
        # stored page; "after" it nothing stored can qualify.
        if after is not None:
            return []
        return self.inner.page(conversation_id, limit=limit)

    def last_seq(self, conversation_id: int) -> int:
        tail = self.buffer.tail(conversation_id)
        stored = self.inner.last_seq(conversation_id)
        return max([stored, *(m.seq for m in tail)])

    def latest(self, conversation_id: int) -> Message | None:
        page = self.page(conversation_id, limit=1)
        return page[-1] if page else None

    def set_watermark(self, mark: Watermark) -> Watermark:
        return self.inner.set_watermark(mark)

    def set_watermarks(self, marks: Sequence[Watermark]) -> None:
        self.inner.set_watermarks(marks)

    def inbox_append_many(self, entries: Sequence[tuple[Sequence[int], Message]]) -> None:
        self.inner.inbox_append_many(entries)

    def watermarks(self, conversation_id: int,
                   user_ids: Iterable[int] | None = None) -> dict[int, Watermark]:
        return self.inner.watermarks(conversation_id, user_ids)

    def inbox_append(self, user_ids: Iterable[int], message: Message) -> None:
        self.inner.inbox_append(user_ids, message)

    def inbox_page(self, user_id: int, after_message_id: int | None = None,
                   limit: int = 100) -> list[InboxEntry]:
        return self.inner.inbox_page(user_id, after_message_id, limit)

    def close(self) -> None:
        self.inner.close()
