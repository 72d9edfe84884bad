"""Screenshots of the demo for docs/screenshots/, taken by the test run.

A fresh gateway with a small, realistic scene: a direct chat with a friend who is online
and typing, a busy group with unread messages, a quieter chat. The checks are about
layout: the narrow width shows one pane at a time and never scrolls sideways.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from switchboard_client import Api, open_transport
from tests.browser.conftest import PASSWORD

pytestmark = pytest.mark.browser

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

PEOPLE = {"maya": "Maya Chen", "leo": "Leo Park", "sam": "Sam Rivera", "priya": "Priya Nair"}


def _scene(url: str) -> dict[str, Api]:
    apis = {}
    for username, name in PEOPLE.items():
        api = Api(url)
        api.sign_up(username, PASSWORD, name)
        apis[username] = api
    maya, leo, sam, priya = (apis[u] for u in PEOPLE)
    for friend in (leo, priya):
        maya.befriend(friend.user_id)
        friend.befriend(maya.user_id)
    quiet = sam.direct(maya.user_id)["id"]
    sam.send(quiet, "Thanks for the notes from Tuesday!")
    maya.send(quiet, "Anytime. The deck is in the shared folder.")
    sam.send(quiet, "Found it, thanks!")
    group = priya.group("Design review", [maya.user_id, leo.user_id, sam.user_id])["id"]
    for api, text in [
        (priya, "Pushed the new onboarding flow to staging!"),
        (leo, "Nice! The empty states look much better."),
        (sam, "One thing: the skip button is hard to find on small screens."),
        (priya, "Good catch, I'll move it next to the progress dots."),
        (leo, "Can we review it together at 3?"),
    ]:
        api.send(group, text)
    chat = leo.direct(maya.user_id)["id"]
    for api, text in [
        (leo, "Hey Maya! Are we still on for the climbing gym tonight?"),
        (maya, "Yes! 7pm works for me."),
        (leo, "Great. I'll book the bouldering area."),
        (maya, "Perfect. Should I bring the spare shoes for Sam?"),
        (leo, "Please do, he forgot his again 😄"),
        (maya, "Ha, classic. See you there!"),
    ]:
        api.send(chat, text)
    return apis


def _leo_types(page, leo: Api, conversation: int) -> None:  # type: ignore[no-untyped-def]
    """Typing is rate-limited per user and conversation: ask until the page shows it."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        leo.typing(conversation)
        try:
            page.wait_for_selector("#typing .dots", timeout=1500)
            return
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: ask again
            continue
    raise AssertionError("the typing indicator never showed")


def test_screenshots_desktop_and_mobile(make_gateway, chromium):
    gateway = make_gateway(presence_timeout=30, typing_interval=2)
    apis = _scene(gateway.url)
    SHOTS.mkdir(parents=True, exist_ok=True)
    leo_feed = open_transport("ws", apis["leo"])  # Leo is online
    try:
        shots = {}
        for name, viewport, scale in [("desktop", {"width": 1280, "height": 800}, 1),
                                      ("mobile", {"width": 390, "height": 844}, 2)]:
            context = chromium.new_context(viewport=viewport, device_scale_factor=scale,
                                           is_mobile=scale > 1, has_touch=scale > 1)
            try:
                page = context.new_page()
                page.goto(gateway.url + "/")
                if name == "mobile":
                    page.screenshot(path=str(SHOTS / "mobile-login.png"))
                    shots["mobile-login"] = SHOTS / "mobile-login.png"
                page.fill("#auth-username", "maya")
                page.fill("#auth-password", PASSWORD)
                page.click("#auth-submit")
                page.wait_for_selector("#transport[data-state=connected]", timeout=30_000)
                page.wait_for_selector('.conv[data-title="Design review"] .unread',
                                       timeout=30_000)
                if name == "mobile":
                    page.wait_for_selector('.conv[data-title="Leo Park"] '
                                           '.presence[data-online="1"]', timeout=30_000)
                    page.screenshot(path=str(SHOTS / "mobile-list.png"))
                    shots["mobile-list"] = SHOTS / "mobile-list.png"
                page.click('.conv[data-title="Leo Park"]')
                page.wait_for_selector('#chat-avatar .presence[data-online="1"]',
                                       timeout=30_000)
                page.wait_for_selector(".receipt-line", timeout=30_000)
                conversation = page.evaluate("window.sb.current")
                apis["leo"].mark_read(conversation, apis["maya"].messages(conversation)[-1]["id"])
                page.wait_for_selector('.receipt-line[data-receipt="read"]', timeout=30_000)
                _leo_types(page, apis["leo"], conversation)
                page.mouse.move(0, 0)
                time.sleep(0.3)  # let the typing dots' animation show a frame
                page.screenshot(path=str(SHOTS / f"{name}.png"))
                shots[name] = SHOTS / f"{name}.png"
                # Layout: nothing wider than the screen; on a phone one pane at a time.
                assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
                sidebar_visible = page.is_visible(".sidebar")
                assert sidebar_visible is (name == "desktop")
                assert page.is_visible("#composer-input")
                if name == "mobile":
                    page.click("#back")
                    assert page.is_visible(".sidebar") and not page.is_visible(".chat")
            finally:
                context.close()
        for path in shots.values():
            data = path.read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, path
    finally:
        leo_feed.close()
