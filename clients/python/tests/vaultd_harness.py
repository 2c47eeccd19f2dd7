"""A real vaultd for the end-to-end tests, started the way the Rust harness
(tests/harness) and scripts/dev-run start it: a SoftHSM2 token in a temp
directory, scheme-sim on 127.0.0.1 (a free port), the KEK ceremony, then
``vaultd run``. Uses the binaries in target/debug (``VAULTD_BIN_DIR``
overrides; they are built with cargo when missing).

Waits poll with a ceiling and never assert how long something took.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from vaultd_client import Client, VaultdError

REPO = Path(__file__).resolve().parents[3]
CEILING = 60.0

#: A merchant of tenant t-a (role merchant only), and a uid configured nowhere.
MERCHANT_UID = 1401
UNKNOWN_UID = 1499


def bin_dir() -> Path:
    d = Path(os.environ.get("VAULTD_BIN_DIR", REPO / "target" / "debug"))
    if not all((d / b).exists() for b in ("vaultd", "scheme-sim")):
        subprocess.run(
            ["cargo", "build", "-q", "-p", "vaultd", "-p", "scheme-sim"],
            cwd=REPO,
            check=True,
        )
    return d


def softhsm_module() -> str:
    for m in (
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    ):
        if os.path.exists(m):
            return m
    raise RuntimeError("SoftHSM2 is not installed (apt-get install softhsm2)")


def wait_for(what: str, probe, ceiling: float = CEILING):
    """Calls ``probe`` until it returns something other than None; fails
    after ``ceiling`` seconds with the last thing it said."""
    deadline = time.monotonic() + ceiling
    last = None
    pause = 0.02
    while True:
        try:
            got = probe()
            if got is not None:
                return got
        except Exception as e:  # noqa: BLE001 - reported below
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {ceiling} s for {what}; last: {last}")
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


class Vault:
    def __init__(self) -> None:
        self.bins = bin_dir()
        self.dir = Path(tempfile.mkdtemp(prefix="vault-py-e2e-"))
        # Other uids (the tests' other clients) must reach the socket inside.
        os.chmod(self.dir, 0o755)
        self.socket = str(self.dir / "vaultd.sock")
        self.log_path = self.dir / "vaultd.log"
        self.sim_log = self.dir / "scheme-sim.log"
        self.env = dict(os.environ, SOFTHSM2_CONF=str(self.dir / "softhsm2.conf"))
        self.env.pop("RUST_LOG", None)
        self.sim: subprocess.Popen | None = None
        self.daemon: subprocess.Popen | None = None
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _run(self, *args: str) -> str:
        out = subprocess.run(args, env=self.env, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"{args[0]} {args[1:3]} failed: {out.stderr[-2000:]}")
        return out.stdout

    def _start(self) -> None:
        tokens = self.dir / "tokens"
        tokens.mkdir()
        (self.dir / "softhsm2.conf").write_text(
            f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
        )
        pin = self.dir / "hsm.pin"
        pin.write_text("1234-test-pin\n")
        os.chmod(pin, 0o600)  # vaultd refuses a PIN file open to others
        self._run(
            "softhsm2-util", "--init-token", "--free", "--label", "vaultd-test",
            "--pin", "1234-test-pin", "--so-pin", "5678-test-so",
        )
        kek = self.dir / "kek"
        kek.mkdir()
        self.sim = subprocess.Popen(
            [str(self.bins / "scheme-sim"), "--listen", "127.0.0.1:0", "--kek-dir", str(kek)],
            stdout=subprocess.PIPE,
            stderr=open(self.sim_log, "ab"),
            stdin=subprocess.DEVNULL,
            text=True,
        )
        banner = self.sim.stdout.readline().strip()
        port = int(banner.rsplit(":", 1)[1])
        self.sim.stdout.close()
        url = f"http://127.0.0.1:{port}"
        schemes = "".join(
            f'[schemes.{name}]\nurl = "{url}"\ntoken_requestor_id = "{trid}"\n'
            for name, trid in (
                ("visa", "40010030273"),
                ("mastercard", "50110030273"),
                ("amex", "34010030273"),
                ("discover", "60110030273"),
            )
        )
        config = f"""[server]
socket = "{self.socket}"
[storage]
path = "{self.dir / 'vault.redb'}"
[hsm]
module = "{softhsm_module()}"
token_label = "vaultd-test"
pin_file = "{pin}"
[log]
level = "info,vaultd=debug"
[provisioning]
backoff_initial = "50ms"
backoff_max = "500ms"
max_attempts = 30
poll_interval = "1s"
breaker_threshold = 20
breaker_cooldown = "500ms"
{schemes}
[[tenant]]
id = "t-a"
network_tokens = true

[[client]]
name = "root"
uid = 0
tenant = "t-a"
tenants = ["*"]
roles = ["merchant", "admin", "forwarder"]

[[client]]
name = "shop-a"
uid = {MERCHANT_UID}
tenant = "t-a"
roles = ["merchant"]
"""
        self.config = self.dir / "vaultd.toml"
        self.config.write_text(config)
        vaultd = str(self.bins / "vaultd")
        self._run(vaultd, "--config", str(self.config), "keys", "init")
        for scheme in ("visa", "mastercard", "amex", "discover"):
            self._run(
                vaultd, "--config", str(self.config), "keys", "import-kek", "--scheme", scheme,
                "--component", str(kek / f"{scheme}.c1"), "--component", str(kek / f"{scheme}.c2"),
            )
        log = open(self.log_path, "ab")
        self.daemon = subprocess.Popen(
            [vaultd, "--config", str(self.config), "run", "--allow-root"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )

        def ready():
            if self.daemon.poll() is not None:
                raise AssertionError(f"vaultd exited during start-up: {self.log()[-3000:]}")
            with Client(self.socket, timeout=5) as c:
                return c.health()

        wait_for("vaultd to answer health", ready)

    def client(self, **kw) -> Client:
        return Client(self.socket, **kw)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(CEILING)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        if self.sim is not None and self.sim.poll() is None:
            self.sim.kill()
            self.sim.wait()

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def call_as(socket_path: str, uid: int, op: str, args: dict | None = None) -> dict:
    """Calls ``op`` from a forked child whose uids are all ``uid`` (its gid
    stays root's, so it may open the 0660 socket, as the Rust harness's
    clients do), and reports the outcome: ``{"ok": True}`` or the error's
    ``code``, ``retryable`` and ``message``. The tests run as root."""
    import json

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no exception may escape
        try:
            os.close(r)
            os.setresuid(uid, uid, uid)
            try:
                with Client(socket_path, timeout=30) as c:
                    c.call(op, args)
                out = {"ok": True}
            except VaultdError as e:
                out = {"ok": False, "code": getattr(e, "code", type(e).__name__), "retryable": e.retryable, "message": e.message}
            os.write(w, json.dumps(out).encode())
        except BaseException as e:  # noqa: BLE001
            os.write(w, json.dumps({"ok": False, "code": "child:" + type(e).__name__}).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def raw_frames(path: str, data: bytes, answers_wanted: int, then_eof: bool, timeout: float = CEILING) -> tuple[list[bytes], bool]:
    """Writes ``data`` on a fresh connection and reads ``answers_wanted``
    whole answer frames (length header included); with ``then_eof`` also
    waits for the server to close. Returns the frames and whether the server
    closed the connection."""
    import socket

    from vaultd_client import wire

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    s.sendall(data)
    buf = bytearray()
    frames: list[bytes] = []
    closed = False
    try:
        while len(frames) < answers_wanted or (then_eof and not closed):
            chunk = s.recv(65536)
            if not chunk:
                closed = True
                break
            buf += chunk
            frames += [wire.frame(b) for b in wire.split_frames(buf)]
    finally:
        s.close()
    return frames, closed


def raw_frames_as(path: str, uid: int, data: bytes, answers_wanted: int) -> list[bytes]:
    """:func:`raw_frames` from a forked child running as ``uid`` (see
    :func:`call_as`)."""
    import json

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setresuid(uid, uid, uid)
            frames, _ = raw_frames(path, data, answers_wanted, False)
            os.write(w, json.dumps([f.hex() for f in frames]).encode())
        except BaseException as e:  # noqa: BLE001
            os.write(w, json.dumps({"crash": type(e).__name__}).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    got = json.loads(data)
    assert isinstance(got, list), got
    return [bytes.fromhex(h) for h in got]
