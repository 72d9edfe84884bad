"""nginx from Debian's packages as the reverse proxy in front of a test gateway.

Two shapes of proxy that break push transports the way real networks do:

* ``websocket=False``: a proxy that does not forward the ``Upgrade`` handshake (it
  sends ``Connection: ""`` upstream, like many corporate proxies): the gateway sees a
  plain GET and refuses it with 400, so the browser's WebSocket never opens.
* ``buffering=True``: ``proxy_buffering on`` and the gateway's ``X-Accel-Buffering: no``
  ignored, so nginx holds the SSE stream back in its buffers; long-polls (complete
  responses) pass.

Runs in the foreground (``daemon off``) with all its files in one directory, and is
stopped by PID.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.servers import free_port, wait_serving

_CONF = """\
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 512; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            # No "Upgrade"/"Connection: upgrade" forwarded: WebSocket cannot pass.
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            # Long-polls hold up to 25 s; well below this.
            proxy_read_timeout 60s;
{buffering}
        }}
    }}
}}
"""

_BUFFERING = """\
            proxy_buffering on;
            proxy_buffers 8 64k;
            proxy_buffer_size 64k;
            proxy_ignore_headers X-Accel-Buffering;
            gzip on;
            gzip_types text/event-stream application/json;"""


class Nginx:
    def __init__(self, binary: str, run_dir: Path, upstream_port: int, *,
                 buffering: bool) -> None:
        self.binary = binary
        self.dir = run_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.upstream_port = upstream_port
        self.buffering = buffering
        self.proc: subprocess.Popen | None = None
        self.log_path = run_dir / "nginx.log"

    def start(self, timeout: float = 20.0) -> Nginx:
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.dir / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        conf = self.dir / "nginx.conf"
        conf.write_text(_CONF.format(dir=self.dir, port=self.port, upstream=self.upstream_port,
                                     buffering=_BUFFERING if self.buffering else ""))
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [self.binary, "-p", str(self.dir), "-c", str(conf), "-e", "stderr"],
            stdout=log, stderr=subprocess.STDOUT)
        if wait_serving(self.url, self.proc, timeout, "nginx", self.log_tail):
            return self
        self.stop()
        raise RuntimeError(f"nginx did not start:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # SIGTERM: nginx's fast shutdown, workers included
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
