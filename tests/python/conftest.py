"""Fixtures: one emulator process per test session, a clean emulator state per test.

The emulator binary comes from $CONFSYNC_BIN (default: target/release/confsync relative to the
repository root). It is started as `$CONFSYNC_BIN emulator --listen 127.0.0.1:0`; the first line
it prints on stdout is its base URL (e.g. `http://127.0.0.1:41234/`).
"""

from __future__ import annotations

import http.server
import os
import pathlib
import queue
import subprocess
import threading
import time
from dataclasses import dataclass, field

import pytest

from calsupport import ALICE, BOB, Admin, user_calendar, wait_for

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_SECONDS = 20


def _emulator_binary() -> pathlib.Path:
    raw = os.environ.get("CONFSYNC_BIN", "target/release/confsync")
    path = pathlib.Path(raw)
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path


def _abort(reason: str) -> None:
    # Without a running emulator no test can do anything useful: stop the run with one message
    # instead of repeating the same setup error for every test.
    pytest.exit(f"cannot start the emulator: {reason}", returncode=pytest.ExitCode.TESTS_FAILED)


@pytest.fixture(scope="session")
def emulator(tmp_path_factory) -> str:
    """Start the emulator on a free loopback port; yield its base URL (ends with '/')."""
    binary = _emulator_binary()
    if not os.access(binary, os.X_OK):
        _abort(f"emulator binary not found or not executable: {binary} (set CONFSYNC_BIN)")

    log_path = tmp_path_factory.mktemp("emulator") / "stderr.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [str(binary), "emulator", "--listen", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        cwd=REPO_ROOT,
    )

    lines: queue.Queue[bytes] = queue.Queue()

    def pump_stdout() -> None:
        # Read the first line for the fixture, then keep draining so the pipe never fills up.
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, b""):
            lines.put(line)
        lines.put(b"")  # EOF marker

    threading.Thread(target=pump_stdout, name="emulator-stdout", daemon=True).start()

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        log.close()

    try:
        first = lines.get(timeout=STARTUP_TIMEOUT_SECONDS)
    except queue.Empty:
        stop()
        _abort(f"emulator printed no base URL within {STARTUP_TIMEOUT_SECONDS}s; "
                    f"stderr: {log_path.read_text(errors='replace')[-4000:]}")
    base_url = first.decode("utf-8", "replace").strip()
    if not base_url.startswith("http://127.0.0.1:"):
        stop()
        _abort(f"unexpected first stdout line {first!r} (exit code {proc.poll()}); "
                    f"stderr: {log_path.read_text(errors='replace')[-4000:]}")
    if not base_url.endswith("/"):
        base_url += "/"

    try:
        yield base_url
    finally:
        stop()


@dataclass
class Env:
    """A freshly reset emulator with users alice@example.com and bob@example.com."""

    base_url: str
    admin: Admin
    users: dict = field(default_factory=dict)

    def calendar(self, email: str = ALICE):
        """The official client, authenticated as `email` (dev-mode bearer token)."""
        return user_calendar(self.base_url, email)


@pytest.fixture
def admin(emulator) -> Admin:
    """Admin API client on an emulator that has just been reset."""
    a = Admin(emulator)
    a.reset()
    return a


@pytest.fixture
def env(emulator, admin) -> Env:
    e = Env(base_url=emulator, admin=admin)
    for email, name in ((ALICE, "Alice"), (BOB, "Bob")):
        created = admin.create_user(email, name)
        assert created["email"] == email, created
        assert created["calendarId"] == email, created
        e.users[email] = created
    return e


@pytest.fixture
def alice(env):
    """Alice's Calendar v3 service (official client)."""
    return env.calendar(ALICE)


# --------------------------------------------------------------------------------------------
# Web-hook receiver for push notifications
# --------------------------------------------------------------------------------------------


class WebhookReceiver:
    """A tiny HTTP server on 127.0.0.1:<free port> that records every POST it gets."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                record = {
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body,
                    "received": time.monotonic(),
                }
                with receiver._lock:
                    receiver.messages.append(record)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, name="webhook",
                                       daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def snapshot(self) -> list[dict]:
        with self._lock:
            return list(self.messages)

    def wait_for_message(self, predicate, timeout: float = 5.0, what: str = "a notification"):
        def find():
            for m in self.snapshot():
                if predicate(m):
                    return m
            return None

        return wait_for(find, timeout=timeout, message=what)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook():
    receiver = WebhookReceiver()
    try:
        yield receiver
    finally:
        receiver.close()
