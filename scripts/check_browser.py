#!/usr/bin/env python3
"""Check that Playwright (Python) can drive Debian's Chromium here.

Serves a small page with `python -m http.server` on 127.0.0.1, then in headless
Chromium: runs JS, removes WebSocket/EventSource with an init script, switches
the context offline and online again, and takes a screenshot.

No arguments. Exit 0 on success. Needs the `playwright` Python package (never
`playwright install`: the browser is Debian's, SWITCHBOARD_TEST_CHROMIUM or
/usr/bin/chromium). The screenshot is left in $TMPDIR/switchboard-check-browser.png.
"""

import os
import re
import subprocess
import sys
import tempfile
import time

CHROMIUM = os.environ.get("SWITCHBOARD_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>switchboard browser check</title></head>
<body style="font-family: sans-serif">
<h1 id="h">Switchboard</h1>
<p id="ws"></p>
<script>
document.getElementById("ws").textContent =
  "WebSocket: " + typeof window.WebSocket + ", EventSource: " + typeof window.EventSource;
</script>
</body></html>
"""
NO_PUSH = "delete window.WebSocket; delete window.EventSource;"
FETCH = """async (url) => {
  try { const r = await fetch(url, {cache: "no-store"}); return r.status; }
  catch (e) { return "error: " + e.name; }
}"""


def serve(directory):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-u",
            "-m",
            "http.server",
            "0",
            "--bind",
            "127.0.0.1",
            "--directory",
            directory,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = proc.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N (...) ..."
    m = re.search(r"port (\d+)", line)
    if not m:
        proc.kill()
        raise SystemExit(f"http.server did not start: {line!r}")
    return proc, int(m.group(1))


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok   {what}")


def main():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("playwright is not installed (pip install playwright)", file=sys.stderr)
        return 1
    if not os.access(CHROMIUM, os.X_OK):
        print(f"{CHROMIUM} missing: bash scripts/services.sh start chromium", file=sys.stderr)
        return 1
    shot = os.path.join(tempfile.gettempdir(), "switchboard-check-browser.png")
    with tempfile.TemporaryDirectory() as root:
        with open(os.path.join(root, "index.html"), "w") as f:
            f.write(PAGE)
        server, port = serve(root)
        url = f"http://127.0.0.1:{port}/index.html"
        t0 = time.monotonic()
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=CHROMIUM, args=ARGS, headless=True, timeout=60_000
                )
                print(f"ok   launched Chromium {browser.version} ({time.monotonic() - t0:.1f}s)")
                try:
                    # plain context: push transports exist
                    ctx = browser.new_context()
                    page = ctx.new_page()
                    page.goto(url)
                    check(page.evaluate("1 + 2") == 3, "JS evaluates")
                    check(
                        page.evaluate("typeof WebSocket + typeof EventSource")
                        == "functionfunction",
                        "WebSocket/EventSource present by default",
                    )
                    ctx.close()

                    # init script removes them before any page script runs
                    ctx = browser.new_context(viewport={"width": 800, "height": 600})
                    ctx.add_init_script(NO_PUSH)
                    page = ctx.new_page()
                    page.goto(url)
                    check(
                        page.evaluate("typeof WebSocket + typeof EventSource")
                        == "undefinedundefined",
                        "init script removed WebSocket/EventSource",
                    )
                    check(
                        "WebSocket: undefined" in page.inner_text("#ws"),
                        "page's own script saw them removed",
                    )

                    # offline / online
                    check(page.evaluate(FETCH, url) == 200, "fetch works online")
                    ctx.set_offline(True)
                    check(page.evaluate("navigator.onLine") is False, "navigator.onLine false")
                    check(str(page.evaluate(FETCH, url)).startswith("error"), "fetch fails offline")
                    ctx.set_offline(False)
                    check(page.evaluate("navigator.onLine") is True, "navigator.onLine true")
                    check(page.evaluate(FETCH, url) == 200, "fetch works online again")

                    page.screenshot(path=shot)
                    with open(shot, "rb") as f:
                        data = f.read()
                    check(
                        data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000,
                        f"screenshot {shot} ({len(data)} bytes)",
                    )
                    ctx.close()
                finally:
                    browser.close()
        finally:
            server.terminate()
            server.wait(timeout=10)
    print(f"browser check passed in {time.monotonic() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
