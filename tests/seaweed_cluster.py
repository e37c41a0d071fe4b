"""A real, small, replicated SeaweedFS cluster on 127.0.0.1, for tests of blocks on one.

What ``weed mini`` (tests/s3server.py) runs in one process, here runs as the separate
processes of a deployment (docs/scale-out.md): one master with ``-defaultReplication=001`` (two
copies of every volume, on two volume servers), three volume servers (so that with one down
two are left, enough for new two-copy volumes), a filer (the S3 gateway's namespace, in its
embedded LevelDB) and the S3 gateway with an identity file (signatures checked). Each one can
be killed (SIGKILL: a crash, not a stop) and started again on the same ports and data
directory, which is what a machine that dies and comes back looks like to the rest.

Everything binds 127.0.0.1 on ports picked free, keeps its data and logs under one temp
directory, reports nothing outside (``-telemetry=false``) and is stopped by its PID. Readiness
is polled: the master answers, the master's topology lists all three volume servers, the
filer answers, the S3 gateway accepts our signature and refuses a wrong one.

Small on purpose: volumes of at most ``VOLUME_SIZE_MB`` (none preallocated), and the master
grows ``GROWTH_COUNT`` volumes at a time instead of its default 6 per two-copy layout (fewer
files and a faster first write).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tests.s3server import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    S3Server,
    _free_ports,
    _log_excerpt,
    find_weed,
)

__all__ = ["SeaweedCluster", "WeedNode", "start_cluster"]

REPLICATION = "001"  # two copies, on two servers of one rack (the only rack here)
VOLUME_SERVERS = 3
VOLUME_SIZE_MB = 32
GROWTH_COUNT = 2
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_START_ATTEMPTS = 3  # a free port can be taken between our probe and weed's bind

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no *_proxy here


def _killed_with_parent() -> Callable[[], None] | None:
    """A preexec hook asking Linux to SIGKILL the process if pytest itself dies (a SIGTERM is
    not enough: a filer whose master went at the same moment retries it for ever)."""
    if sys.platform != "linux":
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # loaded before the fork
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:  # pragma: no cover - runs in the child
        prctl(pr_set_pdeathsig, signal.SIGKILL)

    return hook


def http_get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """GET ``url``: (status, body); an HTTP error status is an answer, not an exception."""
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_json(url: str, timeout: float = 10.0) -> Any:
    status, body = http_get(url, timeout)
    if status != 200:
        raise AssertionError(f"GET {url} answered {status}: {body[:300]!r}")
    return json.loads(body)


def poll(predicate: Callable[[], bool], what: str, within: float = START_TIMEOUT,
         interval: float = 0.05) -> None:
    """Call ``predicate`` until it is true (connection errors count as false); fail after
    ``within`` seconds naming ``what``."""
    deadline = time.monotonic() + within
    while True:
        try:
            if predicate():
                return
        except (OSError, urllib.error.URLError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass
class WeedNode:
    """One ``weed`` process of the cluster: how to start it, and its current process."""

    name: str
    args: list[str]
    workdir: Path
    port: int
    grpc_port: int
    stop_timeout: float = STOP_TIMEOUT
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``host:port.grpc``: how SeaweedFS names a server whose gRPC port is not port+10000."""
        return f"127.0.0.1:{self.port}.{self.grpc_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> Path:
        return self.workdir / f"{self.name}.out"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not running"
        return self.proc.pid

    def start(self) -> None:
        """Spawn the process (no wait). From the main thread only: Linux sends the parent-death
        signal when the *thread* that forked exits, so a process started from a worker thread
        (``asyncio.to_thread``) is killed with that thread's pool at the end of the test."""
        assert threading.current_thread() is threading.main_thread(), "start from the main thread"
        assert not self.running, f"{self.name} is already running"
        with open(self.output, "ab") as out:
            self.proc = subprocess.Popen(
                [find_weed(), f"-logdir={self.workdir / 'log'}", *self.args],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C goes to pytest, which stops it in order
                preexec_fn=_killed_with_parent(),
            )

    def kill(self) -> None:
        """SIGKILL by PID and reap it: the process dies as in a crash, with nothing flushed."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        """SIGTERM by PID, wait, SIGKILL if it takes too long."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(
                f"weed {self.name} exited with status {self.proc.returncode}; output:\n"
                f"{_log_excerpt(self.output)}")


@dataclass
class SeaweedCluster:
    """The running cluster's processes and the questions tests ask about it."""

    root: Path
    master: WeedNode
    volumes: list[WeedNode]
    filer: WeedNode
    s3: WeedNode
    sock_dir: Path
    _owned_sock_dir: bool = False

    @property
    def nodes(self) -> list[WeedNode]:
        return [self.master, *self.volumes, self.filer, self.s3]

    @property
    def s3_server(self) -> S3Server:
        """The gateway as tests/s3server.py describes a server (endpoint and credentials)."""
        return S3Server(endpoint_url=self.s3.url, access_key=ACCESS_KEY, secret_key=SECRET_KEY,
                        region=REGION, pid=self.s3.pid, data_dir=self.root,
                        log_dir=self.root / "log")

    # -- readiness ------------------------------------------------------------------------

    def data_nodes(self) -> set[str]:
        """``host:port`` of every volume server the master currently counts in its topology."""
        topology = http_json(f"{self.master.url}/dir/status")["Topology"]
        return {node["Url"] for dc in topology.get("DataCenters") or ()
                for rack in dc.get("Racks") or () for node in rack.get("DataNodes") or ()}

    def wait_master(self) -> None:
        poll(lambda: self._alive(self.master) and
             http_json(f"{self.master.url}/cluster/status").get("IsLeader") is True,
             "the master to lead")

    def wait_volume(self, node: WeedNode) -> None:
        """The server answers and the master lists it (it has sent its first heartbeat)."""
        want = f"127.0.0.1:{node.port}"
        poll(lambda: self._alive(node) and http_get(f"{node.url}/status")[0] == 200
             and want in self.data_nodes(), f"volume server {node.name} to join the master")

    def wait_filer(self) -> None:
        poll(lambda: self._alive(self.filer) and http_get(f"{self.filer.url}/")[0] == 200,
             "the filer to answer")

    def wait_s3(self) -> None:
        """The gateway answers a signed call with our key (and is backed by the filer)."""
        def ready() -> bool:
            self._alive(self.s3)
            try:
                self.client().list_buckets()
            except (ClientError, BotoCoreError):
                return False
            return True

        poll(ready, "the S3 gateway to accept our signature")
        status, _ = http_get(f"{self.s3.url}/")
        assert status == 403, f"an unsigned call got {status}, not 403"
        try:
            self.client(secret="not-the-secret").list_buckets()
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            assert status == 403, f"a wrong secret got {status}, not 403"
        else:
            raise AssertionError("the S3 gateway accepted a wrong secret: its identity file "
                                 "is not in force")

    def wait_dropped(self, node: WeedNode) -> None:
        """The master no longer counts ``node`` (after a kill: its heartbeat stream broke)."""
        gone = f"127.0.0.1:{node.port}"
        poll(lambda: gone not in self.data_nodes(), f"the master to drop {node.name}")

    def _alive(self, node: WeedNode) -> bool:
        node.check_alive()
        return True

    # -- what is stored where ---------------------------------------------------------------

    def client(self, *, secret: str = SECRET_KEY) -> Any:
        """A botocore S3 client on the gateway (few retries: tests ask pointed questions)."""
        return botocore.session.get_session().create_client(
            "s3", endpoint_url=self.s3.url, region_name=REGION, aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=secret,
            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10))

    def new_bucket(self, name: str) -> str:
        """Create a bucket and write (then delete) one object in it: SeaweedFS grows the
        bucket's first volumes on its first write, which concurrent first writes would wait
        for."""
        client = self.client()
        client.create_bucket(Bucket=name)
        client.put_object(Bucket=name, Key=".warm-up", Body=b"x")
        client.delete_object(Bucket=name, Key=".warm-up")
        return name

    def keys(self, bucket: str) -> list[str]:
        client = self.client()
        return [obj["Key"] for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket) for obj in page.get("Contents", ())]

    def object_chunks(self, bucket: str, key: str) -> list[str]:
        """The file ids (``volume,needle``) of an object's chunks, from the filer's entry."""
        entry = http_json(f"{self.filer.url}/buckets/{bucket}/{key}?metadata=true")
        return [chunk["file_id"] for chunk in entry.get("chunks") or ()]

    def volume_holders(self, bucket: str | None = None) -> dict[int, set[str]]:
        """Volume id → the running volume servers that hold a copy, each asked itself (its
        ``/status``), not the master; only the volumes of ``bucket`` (its collection) if
        given."""
        holders: dict[int, set[str]] = {}
        for node in self.volumes:
            if not node.running:
                continue
            for volume in http_json(f"{node.url}/status").get("Volumes") or ():
                if bucket is not None and volume.get("Collection") != bucket:
                    continue
                holders.setdefault(int(volume["Id"]), set()).add(node.name)
        return holders

    def master_locations(self, volume_id: int) -> set[str]:
        """Where the master sends readers of a volume (``/dir/lookup``), as ``host:port``."""
        status, body = http_get(f"{self.master.url}/dir/lookup?volumeId={volume_id}")
        if status != 200:
            return set()
        return {loc["url"] for loc in json.loads(body).get("locations") or ()}

    def needle_from(self, node: WeedNode, file_id: str) -> bytes | None:
        """The chunk's bytes as ``node`` serves them, or None (asked of a server holding the
        volume, that is from its own disk: a server without it would proxy the read)."""
        status, body = http_get(f"{node.url}/{file_id}")
        return body if status == 200 else None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self.master.start()
        for node in self.volumes:
            node.start()
        self.filer.start()
        self.s3.start()
        self.wait_master()
        for node in self.volumes:
            self.wait_volume(node)
        self.wait_filer()
        self.wait_s3()

    def stop(self) -> None:
        """Gateway, filer, volume servers, master: each by its PID, in that order."""
        for node in reversed(self.nodes):
            node.stop()
        for node in self.nodes:
            # gRPC unix sockets are created in /tmp, named after the port, and removed on
            # a clean exit only.
            component = {"master": "master", "filer": "filer", "s3": "s3"}.get(node.name,
                                                                                 "volume")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"/tmp/seaweedfs-{component}-grpc-{node.grpc_port}.sock")
        if self._owned_sock_dir:
            shutil.rmtree(self.sock_dir, ignore_errors=True)


def _identities(path: Path) -> None:
    """The gateway's identity file: one identity with our key, allowed everything on every
    bucket. With it, unsigned and wrongly signed calls are refused."""
    path.write_text(json.dumps({"identities": [{
        "name": "drive",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }]}))


def build_cluster(root: Path) -> SeaweedCluster:
    """Lay out the processes (ports picked now) without starting any."""
    for sub in ("log", "master", "filer", *(f"volume{i}" for i in range(VOLUME_SERVERS))):
        (root / sub).mkdir(parents=True, exist_ok=True)
    # Unix socket paths are limited to 107 bytes; fall back to a short directory.
    sock_dir, owned = root, False
    if len(str(root / "filer.sock")) > 100:
        sock_dir, owned = Path(tempfile.mkdtemp(prefix="weedc-")), True
    _identities(root / "s3.json")
    (root / "master.toml").write_text(
        f"[master.volume_growth]\ncopy_1 = {GROWTH_COUNT}\ncopy_2 = {GROWTH_COUNT}\n"
        f"copy_3 = {GROWTH_COUNT}\ncopy_other = 1\n")
    ports = iter(_free_ports(2 * (3 + VOLUME_SERVERS)))
    common = ["-ip=127.0.0.1", "-ip.bind=127.0.0.1"]

    def node(name: str, make: Callable[[int, int], list[str]], stop_timeout: float = STOP_TIMEOUT
             ) -> WeedNode:
        port, grpc = next(ports), next(ports)
        return WeedNode(name, make(port, grpc), root, port, grpc, stop_timeout)

    master = node("master", lambda p, g: [
        "master", *common, f"-port={p}", f"-port.grpc={g}", f"-mdir={root / 'master'}",
        "-peers=none", "-telemetry=false", f"-defaultReplication={REPLICATION}",
        f"-volumeSizeLimitMB={VOLUME_SIZE_MB}", "-volumePreallocate=false"])
    volumes = [node(f"volume{i}", lambda p, g, i=i: [
        "volume", *common, f"-port={p}", f"-port.grpc={g}", f"-dir={root / f'volume{i}'}",
        "-max=16", f"-master={master.address}", "-preStopSeconds=0", "-idleTimeout=3"])
        for i in range(VOLUME_SERVERS)]
    filer = node("filer", lambda p, g: [
        "filer", *common, f"-port={p}", f"-port.grpc={g}", f"-master={master.address}",
        f"-defaultStoreDir={root / 'filer'}", f"-localSocket={sock_dir / 'filer.sock'}"],
        # Its graceful stop waits on its own metadata subscription for 10 s (seen every time);
        # the gateway is stopped first, so nothing is in flight by then.
        stop_timeout=1.0)
    s3 = node("s3", lambda p, g: [
        "s3", "-ip.bind=127.0.0.1", f"-port={p}", f"-port.grpc={g}",
        f"-filer={filer.address}", f"-config={root / 's3.json'}", "-port.iceberg=0",
        "-port.lance=0", f"-localSocket={sock_dir / 's3.sock'}", "-autoCreateBucket=false",
        "-idleTimeout=3"])
    return SeaweedCluster(root, master, volumes, filer, s3, sock_dir, owned)


def start_cluster(root: Path) -> SeaweedCluster:
    """Start the cluster and wait until every part is ready; retried on other ports if a port
    was taken meanwhile (or anything else kept it from starting)."""
    last = ""
    for attempt in range(_START_ATTEMPTS):
        cluster = build_cluster(root / f"try{attempt}")
        try:
            cluster.start()
            return cluster
        except AssertionError as exc:
            last = str(exc)
            cluster.stop()
    pytest.fail(f"the SeaweedFS cluster did not start: {last}", pytrace=False)
