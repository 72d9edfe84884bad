"""Start-up rules and documentation that must not drift from the code."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import config
from config import Settings
from config import __main__ as settings_doc
from tests.servers import ROOT


def test_refuses_to_serve_without_gevent_patching():
    from gateway import create_app

    with pytest.raises(RuntimeError, match="monkey-patching"):
        create_app({"require_gevent": True})


def test_environment_overrides_are_typed():
    settings = Settings.from_env({"SWITCHBOARD_MAX_GROUP_MEMBERS": "7",
                                  "SWITCHBOARD_SSE_HEARTBEAT": "2.5",
                                  "SWITCHBOARD_REQUIRE_GEVENT": "yes"})
    assert settings.max_group_members == 7 and settings.sse_heartbeat == 2.5
    assert settings.require_gevent is True
    with pytest.raises(ValueError, match="SWITCHBOARD_MAX_GROUP_MEMBERS"):
        Settings.from_env({"SWITCHBOARD_MAX_GROUP_MEMBERS": "many"})


def test_readme_lists_every_setting_as_generated():
    readme = (ROOT / "README.md").read_text()
    for name in config.env_names():
        assert f"`{name}`" in readme, name
    section = readme.split(settings_doc.BEGIN)[1].split(settings_doc.END)[0]
    assert section.strip() == settings_doc.markdown().strip(), "run: python -m config --readme"


def test_readme_commands_exist():
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/run" in readme and "bash scripts/test" in readme
    assert "scripts/test" in (ROOT / ".ci/run").read_text()
    assert Path(ROOT / "scripts/run").exists() and Path(ROOT / "scripts/test").exists()


def test_embedded_engine_refuses_several_workers(tmp_path):
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "SWITCHBOARD_WORKERS": "2",
           "SWITCHBOARD_DATA_DIR": str(tmp_path), "SWITCHBOARD_BIND": "127.0.0.1:0"}
    proc = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py",
                           "wsgi:app"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0
    assert "SWITCHBOARD_REDIS_URL" in proc.stdout + proc.stderr


def test_metrics_and_readiness_over_gunicorn(new_user, gateway):
    import requests

    from switchboard_client import open_transport

    alice, bob = new_user(), new_user()
    conv = alice.direct(bob.user_id)["id"]
    feed = open_transport("sse", bob)
    counted = ('switchboard_connections{transport="sse"}', "switchboard_messages_sent_total",
               'switchboard_events_delivered_total{transport="sse"}',
               'switchboard_delivery_latency_seconds_count{transport="sse"}')
    try:
        alice.send(conv, "counted")
        assert feed.collect(1, 10, kind="message.created")
        # Each worker writes its tally once a second; the scrape's own worker at once.
        deadline = time.monotonic() + 5
        while True:
            text = requests.get(gateway.url + "/metrics", timeout=10).text
            samples = {line.split(" ")[0]: float(line.split(" ")[1])
                       for line in text.splitlines() if line and not line.startswith("#")}
            if all(samples.get(name, 0) >= 1 for name in counted):
                break
            assert time.monotonic() < deadline, {n: samples.get(n) for n in counted}
            time.sleep(0.2)
    finally:
        feed.close()
    ready = requests.get(gateway.url + "/v1/ready", timeout=10)
    assert ready.status_code == 200 and ready.json()["ready"] is True
