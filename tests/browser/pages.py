"""The demo chat page, as the tests drive it (Playwright, sync API)."""

from __future__ import annotations

import time
from typing import Any

# Generous: two cores, shared with other engineers' test runs.
TIMEOUT_MS = 30_000


class ChatPage:
    def __init__(self, context: Any, base_url: str, query: str = "") -> None:
        self.context = context
        self.page = context.new_page()
        self.base_url = base_url
        self.errors: list[str] = []
        self.page.on("pageerror", lambda err: self.errors.append(str(err)))
        self.page.goto(base_url + "/" + (f"?{query}" if query else ""))
        self.opened_at = time.monotonic()

    # --- session --------------------------------------------------------------------
    def log_in(self, username: str, password: str) -> None:
        self.page.fill("#auth-username", username)
        self.page.fill("#auth-password", password)
        self.page.click("#auth-submit")
        self.page.wait_for_selector("#app:not([hidden])", timeout=TIMEOUT_MS)

    def wait_connected(self, transport: str | None = None, timeout_ms: int = TIMEOUT_MS) -> str:
        selector = "#transport[data-state=connected]"
        if transport:
            selector = f"#transport[data-state=connected][data-transport={transport}]"
        self.page.wait_for_selector(selector, timeout=timeout_ms)
        return self.transport()

    def transport(self) -> str:
        return self.page.get_attribute("#transport", "data-transport") or ""

    def client(self, expression: str) -> Any:
        """Evaluate an expression on the page's Switchboard client (``c``)."""
        return self.page.evaluate(
            f"(() => {{ const c = window.sb.client; return {expression}; }})()")

    def transport_history(self) -> list[dict]:
        return self.client("c.history")

    def log(self) -> list[str]:
        return self.page.evaluate("window.sb.log")

    # --- conversations --------------------------------------------------------------
    def open_conversation(self, title: str) -> None:
        row = self.page.locator(f'.conv[data-title="{title}"]')
        row.wait_for(timeout=TIMEOUT_MS)
        row.click()
        self.page.wait_for_selector("#chat-view:not([hidden])", timeout=TIMEOUT_MS)
        self.page.wait_for_function(
            "() => document.getElementById('history-top').textContent !== 'Loading…'",
            timeout=TIMEOUT_MS)

    def start_direct(self, username: str) -> None:
        self.page.click("#new-chat")
        self.page.fill("#new-username", username)
        self.page.click("#new-submit")
        self.page.wait_for_selector("#dialog", state="hidden", timeout=TIMEOUT_MS)
        self.page.wait_for_selector("#chat-view:not([hidden])", timeout=TIMEOUT_MS)

    def start_group(self, title: str, usernames: list[str]) -> None:
        self.page.click("#new-chat")
        self.page.click("#kind-group")
        self.page.fill("#new-title", title)
        self.page.fill("#new-members", ", ".join(usernames))
        self.page.click("#new-submit")
        self.page.wait_for_selector("#dialog", state="hidden", timeout=TIMEOUT_MS)
        self.page.wait_for_selector("#chat-view:not([hidden])", timeout=TIMEOUT_MS)

    def send(self, text: str) -> None:
        self.page.fill("#composer-input", text)
        self.page.press("#composer-input", "Enter")

    # --- what the page shows --------------------------------------------------------
    def messages(self) -> list[dict]:
        """The open conversation's stored messages as shown: text, seq, id, own."""
        return self.page.evaluate("""() => Array.from(
            document.querySelectorAll('#message-list .msg[data-id]')).map(m => ({
              text: m.querySelector('.text').textContent, seq: Number(m.dataset.seq),
              id: m.dataset.id, own: m.classList.contains('own')}))""")

    def texts(self) -> list[str]:
        return [m["text"] for m in self.messages()]

    def wait_texts(self, expected: list[str], timeout_ms: int = TIMEOUT_MS) -> list[dict]:
        """Wait until the open conversation shows exactly ``expected`` (no more, no less)."""
        try:
            self.page.wait_for_function(
                """(want) => {
                  const got = Array.from(document.querySelectorAll(
                    '#message-list .msg[data-id] .text')).map(t => t.textContent);
                  return got.length >= want.length &&
                         JSON.stringify(got.slice(-want.length)) === JSON.stringify(want);
                }""", arg=expected, timeout=timeout_ms)
        except Exception as err:
            raise AssertionError(f"page shows {self.texts()!r}, expected {expected!r}; "
                                 f"transport={self.transport()!r} log={self.log()[-15:]!r}"
                                 ) from err
        shown = self.messages()
        assert [m["text"] for m in shown] == expected, "extra or duplicated messages shown"
        ids = [m["id"] for m in shown]
        assert len(set(ids)) == len(ids), f"a message shows twice: {ids}"
        seqs = [m["seq"] for m in shown]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), f"out of order: {seqs}"
        return shown

    def unread(self, title: str) -> int:
        badge = self.page.locator(f'.conv[data-title="{title}"] .unread')
        return int(badge.text_content()) if badge.count() else 0

    def wait_receipt(self, state: str = "read", timeout_ms: int = TIMEOUT_MS) -> str:
        locator = self.page.locator(f'.receipt-line[data-receipt="{state}"]')
        locator.wait_for(timeout=timeout_ms)
        return locator.text_content() or ""

    def wait_peer_online(self, timeout_ms: int = TIMEOUT_MS) -> None:
        self.page.wait_for_selector('#chat-avatar .presence[data-online="1"]',
                                    timeout=timeout_ms)
