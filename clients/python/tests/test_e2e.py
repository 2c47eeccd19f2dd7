"""End to end against a real vaultd (SoftHSM2 token, scheme-sim on
127.0.0.1), started by the test; the process runs as root so other uids can
be tried, as in the Rust end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import socket
import threading

import pytest

from vaultd_client import (
    AliasNotFound,
    AsyncClient,
    BadRequest,
    FrameTooLarge,
    InvalidExpiry,
    InvalidPan,
    NoUsableCredential,
    Pan,
    PanRequired,
    TransactionNotFound,
    UnknownOp,
    types,
    wire,
)
from vaultd_client.pan import luhn_valid

from conftest import load_vectors
from vaultd_harness import MERCHANT_UID, UNKNOWN_UID, Vault, call_as, raw_frames, raw_frames_as, wait_for

VISA = "4111111111111111"
MASTERCARD = "5555555555554444"
TENANT = "t-a"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the end-to-end tests run as root (scripts/test)")


def test_pan(n: int) -> str:
    """A Luhn-valid number of the 411111 test range, serial ``n``."""
    body = f"411111{n:09d}"
    for d in "0123456789":
        if luhn_valid(body + d):
            return body + d
    raise AssertionError


test_pan.__test__ = False  # a helper, not a test

USED_PANS = [VISA, MASTERCARD] + [test_pan(n) for n in range(1, 40)]


@pytest.fixture(scope="module")
def vault():
    v = Vault()
    try:
        yield v
    finally:
        v.stop()
        v.remove()


@pytest.fixture
def c(vault):
    with vault.client(timeout=30) as client:
        yield client


def wait_active(c, alias: str) -> types.AliasRecord:
    def probe():
        r = c.alias_status(alias)
        return r if r.token_info is not None and r.token_info.status == "active" else None

    return wait_for("the network token to become active", probe)


def test_health(c):
    h = c.health()
    assert isinstance(h, types.Health)
    assert h.ready and h.hsm == "ok" and h.store == "ok"


def test_tokenize_alias_status_and_convergence(c):
    r = c.tokenize(Pan(VISA), 12, 2030)
    assert isinstance(r, types.TokenizeResult)
    assert len(r.alias) == 32 and r.alias.isalnum()
    assert r.type == "card" and r.masked == "411111xxxxxx1111"
    assert (r.card.bin, r.card.last4, r.card.scheme, r.card.pan_removed) == ("411111", "1111", "visa", False)
    assert r.token_info is not None and r.token_info.status in ("pending", "active")
    again = c.tokenize(VISA, 12, 2030)
    assert not again.created and again.alias == r.alias and again.fingerprint == r.fingerprint
    rec = wait_active(c, r.alias)
    assert isinstance(rec, types.AliasRecord)
    ti = rec.token_info
    assert ti.scheme == "visa" and ti.token_ref and ti.token_last4 and len(ti.token_last4) == 4
    assert ti.token_requestor_id == "40010030273"
    assert VISA not in repr(rec)


def test_transaction_tokens(c):
    r = c.tokenize(test_pan(1), 11, 2031, transaction_id="py-txn-0001")
    t = c.transaction_tokens("py-txn-0001")
    assert t.alias == r.alias and t.card.exp_month == 11
    with pytest.raises(TransactionNotFound) as e:
        c.transaction_tokens("py-txn-unknown")
    assert not e.value.retryable and e.value.code == "transaction_not_found"


def test_credentials_as_forwarder(c):
    alias = c.tokenize(VISA, 12, 2030).alias
    wait_active(c, alias)
    cit = c.credentials(alias, TENANT, ["network_token", "pan"], "customer", 1250, "CHF")
    assert isinstance(cit, types.NetworkTokenCredentials)
    assert cit.kind == "network_token" and cit.scheme == "visa"
    assert isinstance(cit.network_token, Pan) and cit.network_token.expose() != VISA
    assert cit.cryptogram and cit.eci == "07" and isinstance(cit.atc, int)
    text = repr(cit) + str(cit)
    assert cit.network_token.expose() not in text and cit.cryptogram not in text
    three_ds = c.credentials(alias, TENANT, ["network_token"], "customer", 1250, "CHF", authenticated_eci="05")
    assert three_ds.eci == "05" and three_ds.atc != cit.atc
    mit = c.credentials(alias, TENANT, ["network_token"], "merchant", 990, "CHF")
    assert mit.cryptogram is None and mit.eci is None and mit.atc is None
    pan = c.credentials(alias, TENANT, ["pan"], "customer", 1250, "CHF")
    assert isinstance(pan, types.PanCredentials)
    assert pan.pan.expose() == VISA and pan.fallback_reason == "receiver_pan_only"
    assert VISA not in repr(pan)


def test_admin_ops_and_the_pan_lifecycle(c):
    s = c.stats()
    assert isinstance(s, types.Stats) and s.aliases >= 1 and "visa" in s.schemes
    assert isinstance(s.queue, types.QueueCounts)
    paused = c.scheme_pause("visa")
    assert paused.paused and paused.scheme == "visa"
    try:
        r = c.tokenize(test_pan(2), 12, 2030)
        assert r.token_info.status == "pending"
        # No active token: the PAN is the only credential.
        with pytest.raises(PanRequired):
            c.remove_pan(r.alias)
        q = c.queue_list()
        assert isinstance(q, types.QueueList)
        assert any(j.alias == r.alias for j in q.jobs)
    finally:
        assert not c.scheme_resume("visa").paused
    wait_active(c, r.alias)
    removed = c.remove_pan(r.alias)
    assert removed.card.pan_removed
    with pytest.raises(NoUsableCredential):
        c.credentials(r.alias, TENANT, ["pan"], "customer", 100, "CHF")
    assert c.credentials(r.alias, TENANT, ["network_token", "pan"], "merchant", 100, "CHF").kind == "network_token"
    assert c.provision(r.alias).alias == r.alias
    assert c.delete_alias(r.alias).deleted
    with pytest.raises(AliasNotFound):
        c.alias_status(r.alias)
    a = c.audit(limit=1000)
    assert isinstance(a, types.Audit) and a.chain_ok
    ops = {rec.op for rec in a.records}
    assert {"tokenize", "credentials", "remove_pan"} <= ops
    assert isinstance(c.events(limit=10), types.Events)
    assert isinstance(c.retention(), types.Retention)


def test_error_paths(c):
    with pytest.raises(InvalidPan) as e:
        c.tokenize("4111111111111112", 12, 2030)
    assert not e.value.retryable and "4111111111111112" not in str(e.value)
    with pytest.raises(InvalidPan):
        c.tokenize("4111 1111 1111 1111", 12, 2030)
    with pytest.raises(InvalidExpiry):
        c.tokenize(VISA, 13, 2030)
    with pytest.raises(InvalidExpiry):
        c.tokenize(VISA, 1, 2001)
    with pytest.raises(AliasNotFound):
        c.alias_status("A" * 32)
    # A key the op does not take is named, never its value.
    with pytest.raises(BadRequest) as e:
        c.call("tokenize", {"pan": Pan(VISA), "exp_month": 12, "exp_year": 2030, "cvc": "123"})
    assert "cvc" in e.value.message and VISA not in e.value.message and "123" not in e.value.message
    with pytest.raises(BadRequest) as e:
        c.call("tokenize", {"pan": Pan(VISA), "exp_month": "12", "exp_year": 2030})
    assert "exp_month" in e.value.message
    with pytest.raises(UnknownOp):
        c.call("frobnicate")
    # The connection survived every refusal.
    assert c.health().ready


def test_roles_by_uid(vault):
    got = call_as(vault.socket, MERCHANT_UID, "stats")
    assert got == {"ok": False, "code": "forbidden", "retryable": False, "message": got["message"]}
    got = call_as(vault.socket, MERCHANT_UID, "credentials", wire.credentials_args("A" * 32, TENANT, ["pan"], "customer", 1, "CHF"))
    assert got["code"] == "forbidden"
    assert call_as(vault.socket, MERCHANT_UID, "health") == {"ok": True}
    got = call_as(vault.socket, UNKNOWN_UID, "health")
    assert got["code"] == "unauthenticated" and not got["retryable"]


def raw_exchange(path: str, data: bytes, answers_wanted: int, then_eof: bool) -> list[wire.Response]:
    """Writes ``data`` on a fresh connection and reads ``answers_wanted``
    answers; with ``then_eof``, also waits (with a ceiling) for the server to
    close the connection."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(path)
    s.sendall(data)
    buf = bytearray()
    answers: list[wire.Response] = []
    try:
        while len(answers) < answers_wanted or then_eof:
            chunk = s.recv(65536)
            if not chunk:
                assert then_eof, "the server closed the connection"
                break
            buf += chunk
            answers += [wire.decode_response(b) for b in wire.split_frames(buf)]
    finally:
        s.close()
    assert len(answers) == answers_wanted
    return answers


def test_envelope_errors_on_the_raw_socket(vault):
    # v 2.
    answers = raw_exchange(vault.socket, wire.frame(wire.pack({"v": 2, "id": 9, "op": "health"})), 1, False)
    assert answers[0].id == 9 and answers[0].error.code == "unsupported_version"
    # Not MessagePack: id nil, and the connection stays open for the next
    # frame (answered in any order).
    answers = raw_exchange(vault.socket, wire.frame(b"\xc1") + wire.encode_request(5, "health"), 2, False)
    by_id = {a.id: a for a in answers}
    assert by_id[None].error.code == "bad_request" and by_id[5].ok
    # Over max_frame: frame_too_large with id nil, then the server closes.
    answers = raw_exchange(vault.socket, (wire.DEFAULT_MAX_FRAME + 1).to_bytes(4, "big"), 1, True)
    assert answers[0].id is None and isinstance(answers[0].error, FrameTooLarge)
    # A zero length: the server closes without an answer.
    raw_exchange(vault.socket, bytes(4), 0, True)


def test_frame_too_large_then_reconnect(vault):
    with vault.client(max_frame=None) as c:
        assert c.health().ready
        with pytest.raises(FrameTooLarge) as e:
            c.alias_status("A" * (wire.DEFAULT_MAX_FRAME + 10))
        assert not e.value.retryable
        # The server closed that connection; the next call opens another.
        assert wait_for("a call on a new connection", lambda: c.health()).ready


def test_blocking_pipelining_and_threads(c):
    pans = [test_pan(n) for n in range(10, 20)]
    calls = [c.submit("tokenize", wire.tokenize_args(p, 12, 2030)) for p in pans]
    results = [call.result() for call in calls]
    assert all(isinstance(r, types.TokenizeResult) for r in results)
    aliases = [r.alias for r in results]
    assert len(set(aliases)) == len(pans)
    statuses = [c.submit("alias_status", {"alias": a}) for a in reversed(aliases)]
    assert [s.result().alias for s in statuses] == list(reversed(aliases))
    errors = []

    def worker(i):
        try:
            for a in aliases:
                assert c.alias_status(a).alias == a
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in threads)


def test_asyncio_client(vault):
    async def main():
        async with AsyncClient(vault.socket, timeout=30) as c:
            assert (await c.health()).ready
            pans = [test_pan(n) for n in range(20, 30)]
            results = await asyncio.gather(*(c.tokenize(p, 12, 2030) for p in pans))
            aliases = [r.alias for r in results]
            assert len(set(aliases)) == len(pans)
            got = await asyncio.gather(*(c.alias_status(a) for a in aliases), c.health())
            assert [g.alias for g in got[:-1]] == aliases
            with pytest.raises(AliasNotFound):
                await c.alias_status("B" * 32)
            alias = (await c.tokenize(VISA, 12, 2030)).alias
            cred = await c.credentials(alias, TENANT, ["pan"], "customer", 100, "CHF")
            assert cred.pan.expose() == VISA
            s = await c.stats()
            assert s.aliases >= len(pans)
        async with AsyncClient(vault.socket, timeout=30, max_frame=None) as c:
            with pytest.raises(FrameTooLarge):
                await c.alias_status("A" * (wire.DEFAULT_MAX_FRAME + 10))
            assert (await c.health()).ready  # reconnected

    asyncio.run(main())


# Error vectors whose cause this daemon reproduces as they are: the request
# frame is sent byte for byte and the answer must be the vector's response,
# byte for byte (message included). The others need another tenant set-up
# or a fault (network_token_required, rate_limited, unavailable, ...), or
# name synthetic aliases this daemon does not have (pan_required,
# no_usable_credential: it answers alias_not_found).
SAME_ANSWER = {
    "bad_request/unknown_arg_key": 0,
    "bad_request/wrong_type": 0,
    "bad_request/missing_v": 0,
    "bad_request/not_msgpack": 0,
    "bad_request/not_a_map": 0,
    "unsupported_version": 0,
    "unknown_op": 0,
    "frame_too_large": 0,
    "invalid_pan/luhn": 0,
    "invalid_pan/spaces": 0,
    "invalid_expiry": 0,
    "alias_not_found": 0,
    "transaction_not_found": 0,
    "forbidden": MERCHANT_UID,
    "unauthenticated": UNKNOWN_UID,
}


@pytest.mark.parametrize("name", sorted(SAME_ANSWER))
def test_error_vectors_are_what_vaultd_answers(vault, name):
    (v,) = [v for v in load_vectors("errors.json") if v["name"] == name]
    request = bytes.fromhex(v["request"]["frame"])
    want = bytes.fromhex(v["response"]["frame"])
    uid = SAME_ANSWER[name]
    if uid:
        got = raw_frames_as(vault.socket, uid, request, 1)
    else:
        got, closed = raw_frames(vault.socket, request, 1, v["connection"] == "closed")
        assert closed == (v["connection"] == "closed")
    assert got == [want]


@pytest.mark.parametrize("v", [v for v in load_vectors("framing.json") if v["max_frame"] == wire.DEFAULT_MAX_FRAME], ids=lambda v: v["name"])
def test_framing_vectors_against_vaultd(vault, v):
    data = bytes.fromhex(v["bytes"])
    requests = sum(1 for r in v["reads"] if r.startswith("frame:"))
    if v["response"] is not None:
        wanted = [bytes.fromhex(v["response"]["frame"])]
    else:
        wanted = None  # the answers to well-formed requests (not in the vector)
    if any(r == "truncated" for r in v["reads"]) and v["connection"] == "open":
        return  # the server waits for the rest of the frame
    if "truncated" in v["reads"]:
        # The client ends the stream inside a frame: half-close and expect
        # the server to close without an answer.
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(60)
        s.connect(vault.socket)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        assert s.recv(65536) == b""
        s.close()
        return
    got, closed = raw_frames(vault.socket, data, max(requests, 1 if wanted else 0), v["connection"] == "closed")
    assert closed == (v["connection"] == "closed")
    if wanted is not None:
        assert got == wanted
    else:
        assert len(got) == requests and all(wire.decode_response(f[4:]).ok for f in got)


def same_shape(vec, real, where="result"):
    """The vector's value and the daemon's have the same keys in the same
    order, recursively (values differ; maps keyed by data, like
    stats.tokens, compare their first entry's shape)."""
    if isinstance(vec, dict) and isinstance(real, dict):
        if where.endswith((".tokens", ".schemes")):
            if vec and real:
                same_shape(next(iter(vec.values())), next(iter(real.values())), where + ".*")
            return
        assert list(vec) == list(real), f"{where}: {list(vec)} != {list(real)}"
        for k in vec:
            if vec[k] is not None and real[k] is not None:
                same_shape(vec[k], real[k], f"{where}.{k}")
    elif isinstance(vec, list) and isinstance(real, list):
        if vec and real:
            same_shape(vec[0], real[0], where + "[]")
    else:
        assert type(vec) is type(real), f"{where}: {type(vec).__name__} != {type(real).__name__}"


def test_op_vectors_have_the_shape_vaultd_answers(vault, c):
    """Each successful op vector's result is laid out (keys, order, types)
    as this daemon's answer to the same op."""
    vectors = {v["name"]: v["response"]["value"]["result"] for v in load_vectors("ops.json")}

    def real(op, args):
        frames, _ = raw_frames(vault.socket, wire.encode_request(1, op, args), 1, False)
        r = wire.decode_response(frames[0][4:])
        assert r.ok, r.error
        return r.result

    alias = c.tokenize(VISA, 12, 2030, transaction_id="py-shape-1").alias
    wait_active(c, alias)
    checks = [
        ("health", "health", {}),
        ("tokenize/existing_with_transaction_id", "tokenize", wire.tokenize_args(VISA, 12, 2030, "py-shape-1")),
        ("transaction_tokens", "transaction_tokens", wire.transaction_args("py-shape-1")),
        ("alias_status/active", "alias_status", wire.alias_args(alias)),
        ("provision", "provision", wire.alias_args(alias)),
        ("credentials/network_token_cit", "credentials", wire.credentials_args(alias, TENANT, ["network_token"], "customer", 1250, "CHF")),
        ("credentials/network_token_mit", "credentials", wire.credentials_args(alias, TENANT, ["network_token"], "merchant", 1250, "CHF")),
        ("credentials/pan", "credentials", wire.credentials_args(alias, TENANT, ["pan"], "customer", 1250, "CHF")),
        ("stats/extended", "stats", {}),
        ("queue_list", "queue_list", wire.queue_list_args(None, 10, None)),
        ("scheme_pause", "scheme_pause", wire.scheme_args("discover")),
        ("scheme_resume", "scheme_resume", wire.scheme_args("discover")),
        ("retention", "retention", {}),
        ("purge_due", "purge_due", wire.purge_args(None)),
        ("events", "events", wire.page_args(None, 10)),
        ("audit", "audit", wire.page_args(None, 10)),
    ]
    for name, op, args in checks:
        same_shape(vectors[name], real(op, args), name)
    fresh = c.tokenize(test_pan(3), 12, 2030).alias
    wait_active(c, fresh)
    same_shape(vectors["remove_pan"], real("remove_pan", wire.alias_args(fresh)), "remove_pan")
    same_shape(vectors["delete_alias"], real("delete_alias", wire.alias_args(fresh)), "delete_alias")


def test_example_service(vault):
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "checkout_service.py"
    out = subprocess.run(
        [sys.executable, str(example)],
        input=f"{VISA} 12/2030\n{MASTERCARD} 01/2031\n4111111111111112 12/2030\n",
        env=dict(os.environ, VAULTD_SOCKET=vault.socket),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "vaultd ready: True" in out.stdout
    assert "stored 411111xxxxxx1111" in out.stdout and "stored 555555xxxxxx4444" in out.stdout
    assert "pay with a network_token credential (visa)" in out.stdout
    assert "refused: invalid_pan (retryable: False)" in out.stderr
    for p in (VISA, MASTERCARD, "4111111111111112"):
        assert p not in out.stdout + out.stderr


def test_zz_no_card_data_in_the_daemon_log(vault):
    # Runs last in this module: every PAN the tests used, and every network
    # token number and cryptogram they got back.
    log = vault.log()
    assert log, "vaultd wrote a log"
    for p in USED_PANS:
        assert p not in log
