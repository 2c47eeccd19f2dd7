"""The clients against a scripted fake server on a temporary Unix socket:
out-of-order answers, timeouts, reconnect on EOF, answers without an id.
Waits have ceilings; nothing asserts how long anything took."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import threading
import time

import pytest

from vaultd_client import (
    AliasNotFound,
    AsyncClient,
    BadRequest,
    CallTimeout,
    CannotConnect,
    Client,
    ConnectionLost,
    Overloaded,
    types,
    wire,
)

CEILING = 30.0
HEALTH = {"ready": True, "version": "t", "hsm": "ok", "store": "ok", "uptime_ms": 1}


def ok(rid, result):
    return wire.frame(wire.pack({"id": rid, "ok": True, "result": result}))


def err(rid, code, retryable=False):
    return wire.frame(wire.pack({"id": rid, "ok": False, "error": {"code": code, "message": "m", "retryable": retryable}}))


class FakeServer:
    """Accepts connections; for each, calls ``script(conn_no, requests)``
    once ``batch`` requests have come in, and writes what it returns
    (``None``: close the connection; ``b""``: stay silent; ``(bytes,
    True)``: write, then close)."""

    def __init__(self, script, batch=1):
        self.dir = tempfile.mkdtemp(prefix="vaultd-fake-")
        self.path = os.path.join(self.dir, "s.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(16)
        self.script = script
        self.batch = batch
        self.conns = 0
        self.requests: list[dict] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.conns += 1
            threading.Thread(target=self._serve, args=(c, self.conns), daemon=True).start()

    def _serve(self, c, n):
        buf = bytearray()
        pending = []
        c.settimeout(CEILING)
        try:
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    return
                buf += chunk
                for body in wire.split_frames(buf):
                    req = wire.unpack(body)
                    self.requests.append(req)
                    pending.append(req)
                if len(pending) >= self.batch:
                    out = self.script(n, pending)
                    pending = []
                    if out is None:
                        return
                    close = False
                    if isinstance(out, tuple):
                        out, close = out
                    c.sendall(out)
                    if close:
                        return
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.stop.set()
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def fake():
    servers = []

    def make(script, batch=1):
        s = FakeServer(script, batch)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def test_answers_out_of_order_are_matched_by_id(fake):
    # Three requests are answered together, in reverse order.
    srv = fake(lambda n, reqs: b"".join(ok(r["id"], dict(HEALTH, version=str(r["id"]))) for r in reversed(reqs)), batch=3)
    with Client(srv.path, timeout=CEILING) as c:
        calls = [c.submit("health") for _ in range(3)]
        got = [call.result() for call in calls]
    assert [g.version for g in got] == [str(call.id) for call in calls]
    assert all(isinstance(g, types.Health) for g in got)
    assert [r["op"] for r in srv.requests] == ["health"] * 3


def test_async_answers_out_of_order(fake):
    srv = fake(lambda n, reqs: b"".join(ok(r["id"], dict(HEALTH, version=str(r["id"]))) for r in reversed(reqs)), batch=3)

    async def main():
        async with AsyncClient(srv.path, timeout=CEILING) as c:
            return await asyncio.gather(c.health(), c.health(), c.health())

    got = asyncio.run(main())
    assert sorted(g.version for g in got) == ["1", "2", "3"]
    assert [g.version for g in got] == ["1", "2", "3"]


def test_timeout_then_the_late_answer_is_dropped(fake):
    # The first request is never answered; the second is answered with both
    # ids (the late answer to the first must not be taken for anything).
    def script(n, reqs):
        r = reqs[0]
        if r["id"] == 1:
            return b""
        return ok(1, dict(HEALTH, version="late")) + ok(r["id"], HEALTH)

    srv = fake(script)
    with Client(srv.path, timeout=CEILING) as c:
        with pytest.raises(CallTimeout) as e:
            c.health(timeout=0.2)
        assert e.value.retryable and isinstance(e.value, TimeoutError)
        assert c.health().version == "t"


def test_async_timeout(fake):
    srv = fake(lambda n, reqs: b"")

    async def main():
        async with AsyncClient(srv.path, timeout=0.2) as c:
            with pytest.raises(CallTimeout):
                await c.health()

    asyncio.run(main())


def test_reconnect_after_the_server_closes(fake):
    # Connection 1 closes without answering; connection 2 answers.
    srv = fake(lambda n, reqs: None if n == 1 else ok(reqs[0]["id"], HEALTH))
    with Client(srv.path, timeout=CEILING) as c:
        with pytest.raises(ConnectionLost) as e:
            c.health()
        assert e.value.retryable
        assert c.health().ready
    assert srv.conns == 2


def test_async_reconnect_after_the_server_closes(fake):
    srv = fake(lambda n, reqs: None if n == 1 else ok(reqs[0]["id"], HEALTH))

    async def main():
        async with AsyncClient(srv.path, timeout=CEILING) as c:
            with pytest.raises(ConnectionLost):
                await c.health()
            assert (await c.health()).ready

    asyncio.run(main())
    assert srv.conns == 2


def test_an_answer_without_id_goes_to_every_waiter(fake):
    srv = fake(lambda n, reqs: err(None, "overloaded", True) if n == 1 else ok(reqs[0]["id"], HEALTH), batch=2)
    with Client(srv.path, timeout=CEILING) as c:
        a, b = c.submit("health"), c.submit("alias_status", {"alias": "x"})
        for call in (a, b):
            with pytest.raises(Overloaded) as e:
                call.result()
            assert e.value.retryable and e.value.request_id is None


def test_server_errors_raise_their_class(fake):
    srv = fake(lambda n, reqs: err(reqs[0]["id"], "alias_not_found") if reqs[0]["op"] == "alias_status" else err(reqs[0]["id"], "bad_request"))
    with Client(srv.path, timeout=CEILING) as c:
        with pytest.raises(AliasNotFound) as e:
            c.alias_status("x")
        assert e.value.code == "alias_not_found" and not e.value.retryable and e.value.request_id == 1
        with pytest.raises(BadRequest):
            c.call("anything", {"k": 1})


def test_cannot_connect():
    with pytest.raises(CannotConnect) as e:
        Client("/nonexistent/vaultd.sock", timeout=1).health()
    assert e.value.retryable


def test_requests_are_what_the_typed_methods_say(fake):
    srv = fake(lambda n, reqs: ok(reqs[0]["id"], {"purged": 0}))
    with Client(srv.path, timeout=CEILING) as c:
        assert c.purge_due().purged == 0
    assert srv.requests == [{"v": 1, "id": 1, "op": "purge_due", "args": {"tenant": None}}]


def wait_until(what, cond):
    deadline = time.monotonic() + CEILING
    while not cond():
        assert time.monotonic() < deadline, f"waited {CEILING} s for {what}"
        time.sleep(0.01)


def test_a_connection_closed_while_idle_is_replaced_without_error(fake):
    # Every connection answers one request and is then closed by the server
    # (as vaultd does after its idle timeout): the next call just works.
    srv = fake(lambda n, reqs: (ok(reqs[0]["id"], HEALTH), True))
    with Client(srv.path, timeout=CEILING) as c:
        assert c.health().ready
        wait_until("the reader to see the end", lambda: c._conn.dead is not None)
        assert c.health().ready
        wait_until("the reader to see the end", lambda: c._conn.dead is not None)
        assert c.health().ready
    assert srv.conns == 3


def test_async_connection_closed_while_idle_is_replaced(fake):
    srv = fake(lambda n, reqs: (ok(reqs[0]["id"], HEALTH), True))

    async def main():
        async with AsyncClient(srv.path, timeout=CEILING) as c:
            assert (await c.health()).ready
            deadline = time.monotonic() + CEILING
            while c._conn.dead is None:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            assert (await c.health()).ready

    asyncio.run(main())
    assert srv.conns == 2
