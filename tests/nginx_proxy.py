"""Debian's nginx in front of several server processes, for the scale-out tests: run in the
foreground from a temporary prefix (nothing under /etc is read or written), on 127.0.0.1 only,
stopped by its PID. The configuration is the one docs/scale-out.md recommends: streamed
bodies both ways (no request or response buffering), long-poll timeouts above the server's
longest poll, no body size limit of its own (the server enforces its own)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.needs import need

CONFIG = """\
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
worker_processes 1;
events {{}}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream drive {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        proxy_request_buffering off;
        proxy_buffering off;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_read_timeout 120s;
        proxy_send_timeout 120s;
        location / {{ proxy_pass http://drive; }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Nginx:
    """nginx proxying ``http://127.0.0.1:{port}`` to ``upstreams`` (host:port), round robin."""

    def __init__(self, prefix: Path, upstreams: list[str], port: int | None = None) -> None:
        binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                           else None)
        need(binary is not None, "nginx (Debian: apt-get install nginx-light; .ci/run does)")
        assert binary is not None
        prefix.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        servers = "\n".join(f"        server {u};" for u in upstreams)
        conf = prefix / "nginx.conf"
        conf.write_text(CONFIG.format(prefix=prefix, servers=servers, port=self.port))
        self.proc = subprocess.Popen([binary, "-p", str(prefix), "-c", str(conf),
                                      "-g", "daemon off;"], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # nginx answers (a 502 until an upstream is up counts as started)
            except OSError:
                if self.proc.poll() is not None:
                    log = prefix / "error.log"
                    why = log.read_text(errors="replace") if log.exists() else ""
                    raise AssertionError(f"nginx exited: {why}") from None
                time.sleep(0.05)
        self.stop()
        raise AssertionError("nginx did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish the requests in flight
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
