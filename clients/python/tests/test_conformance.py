"""The language-neutral vectors of vault-proto/conformance, run through this
client: every request is built by the client's own (typed) encoder and must
equal the vector byte for byte; every response is decoded into its typed
result (or error class) and agrees with the vector's JSON meaning."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest

from vaultd_client import ERROR_CLASSES, Pan, errors, types, wire
from vaultd_client.client import Call

from conftest import load_vectors

OPS = load_vectors("ops.json")
ERRORS = load_vectors("errors.json")
PIPELINES = load_vectors("pipeline.json")
FRAMING = load_vectors("framing.json")

# Every op this client has a typed method for (PROTOCOL.md and extensions).
TYPED_OPS = set(types.RESULTS)


def frame_bytes(f: dict) -> bytes:
    return bytes.fromhex(f["frame"])


def typed_args(op: str, args: dict) -> dict:
    """The request args as this client's typed builders make them."""
    build = {
        "health": lambda a: wire.no_args(),
        "stats": lambda a: wire.no_args(),
        "retention": lambda a: wire.no_args(),
        "tokenize": lambda a: wire.tokenize_args(Pan(a["pan"]), a["exp_month"], a["exp_year"], a.get("transaction_id")),
        "transaction_tokens": lambda a: wire.transaction_args(a["transaction_id"]),
        "alias_status": lambda a: wire.alias_args(a["alias"]),
        "provision": lambda a: wire.alias_args(a["alias"]),
        "remove_pan": lambda a: wire.alias_args(a["alias"]),
        "delete_alias": lambda a: wire.alias_args(a["alias"]),
        "credentials": lambda a: wire.credentials_args(
            a["alias"], a["tenant"], a["accept"], a["initiator"], a["amount_minor"], a["currency"], a.get("authenticated_eci")
        ),
        "queue_list": lambda a: wire.queue_list_args(a["state"], a["limit"], a["after"]),
        "queue_retry": lambda a: wire.job_args(a["job_id"]),
        "scheme_pause": lambda a: wire.scheme_args(a["scheme"]),
        "scheme_resume": lambda a: wire.scheme_args(a["scheme"]),
        "purge_due": lambda a: wire.purge_args(a["tenant"]),
        "events": lambda a: wire.page_args(a["after"], a["limit"]),
        "audit": lambda a: wire.page_args(a["after"], a["limit"]),
        "key_rotate": lambda a: wire.key_rotate_args(a.get("key")),
        "key_retire": lambda a: wire.key_retire_args(a["version"]),
        "backup": lambda a: wire.backup_args(a["path"]),
        "kek_refresh": lambda a: wire.kek_refresh_args(a["scheme"], a["version"]),
    }
    return build[op](args)


def to_plain(v):
    """A typed result back to the JSON shape (Pan exposed), for comparison."""
    if isinstance(v, Pan):
        return v.expose()
    if dataclasses.is_dataclass(v):
        out = {}
        for f in dataclasses.fields(v):
            if f.name == "extra":
                continue
            out[f.name] = to_plain(getattr(v, f.name))
        out.update(v.extra)
        return out
    if isinstance(v, list):
        return [to_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: to_plain(x) for k, x in v.items()}
    return v


def drop_absent(plain: dict, wire_value: dict) -> dict:
    """Optional fields the wire left out come back as their defaults; compare
    only what the wire has (and require every default to be None/0/empty)."""
    out = {}
    for k, v in plain.items():
        if k in wire_value:
            w = wire_value[k]
            out[k] = drop_absent(v, w) if isinstance(v, dict) and isinstance(w, dict) else v
        else:
            assert v in (None, 0, [], {}), k
    return out


def test_every_op_and_every_error_code_is_covered():
    assert {v["op"] for v in OPS} == TYPED_OPS
    assert {v["error"] for v in ERRORS} == set(ERROR_CLASSES)
    assert len(ERROR_CLASSES) == 18


@pytest.mark.parametrize("v", OPS + ERRORS, ids=lambda v: v["name"])
def test_request_bytes(v):
    req = v["request"]
    if req is None:
        return
    raw = frame_bytes(req)
    if req["value"] is None:
        # Not a MessagePack value (or only a header): nothing to build.
        assert len(raw) == 4 or wire.HEADER.unpack(raw[:4])[0] == len(raw) - 4
        return
    # The generic encoder: JSON meaning -> bytes.
    assert wire.frame(wire.pack(req["value"])) == raw
    assert msgpack.unpackb(raw[4:], raw=False) == req["value"]
    val = req["value"]
    if not isinstance(val, dict) or val.get("v") != 1 or set(val) != {"v", "id", "op", "args"}:
        return
    # The typed builders: same bytes as vault-proto's client.
    op, args = val["op"], val["args"]
    if op in TYPED_OPS and v["error"] != "bad_request":
        assert wire.encode_request(val["id"], op, typed_args(op, args)) == raw


@pytest.mark.parametrize("v", OPS + ERRORS, ids=lambda v: v["name"])
def test_response_decoding(v):
    resp = v["response"]
    raw = frame_bytes(resp)
    (n,) = wire.HEADER.unpack(raw[:4])
    assert n == len(raw) - 4
    assert wire.frame(wire.pack(resp["value"])) == raw, "re-encoding the JSON meaning"
    r = wire.decode_response(raw[4:])
    assert r.id == resp["value"]["id"]
    if v["error"] is None:
        assert r.ok and r.error is None
        typed = types.decode_result(v["op"], r.result)
        assert to_plain(typed) == resp["value"]["result"] or drop_absent(
            to_plain(typed), resp["value"]["result"]
        ) == resp["value"]["result"]
        assert repr(typed)  # never raises
    else:
        err = r.error
        assert isinstance(err, ERROR_CLASSES[v["error"]])
        assert isinstance(err, errors.ServerError)
        assert err.code == v["error"]
        assert err.retryable == resp["value"]["error"]["retryable"] == type(err).retryable
        assert err.message == resp["value"]["error"]["message"]


@pytest.mark.parametrize("v", PIPELINES, ids=lambda v: v["name"])
def test_pipeline_matches_by_id(v):
    # The request stream is the requests concatenated.
    assert b"".join(frame_bytes(f) for f in v["requests"]) == bytes.fromhex(v["request_stream"])
    # Split the response stream as a reader does, in arbitrary chunk sizes.
    stream = bytes.fromhex(v["response_stream"])
    for chunk in (1, 3, 7, 64, len(stream)):
        buf = bytearray()
        bodies = []
        for i in range(0, len(stream), chunk):
            buf += stream[i : i + chunk]
            bodies += wire.split_frames(buf)
        assert not buf
        assert bodies == [frame_bytes(f)[4:] for f in v["responses"]]
    # Every request id is answered once; the order differs.
    asked = []
    for f in v["requests"]:
        val = f["value"]
        asked.append(val.get("id") if isinstance(val, dict) and val.get("v") == 1 else None)
    answered = [wire.decode_response(frame_bytes(f)[4:]).id for f in v["responses"]]
    assert asked != answered
    assert sorted(asked, key=lambda x: -1 if x is None else x) == sorted(answered, key=lambda x: -1 if x is None else x)


def reads(data: bytes, max_frame: int) -> list[str]:
    """What a frame reader with `max_frame` sees (the vectors' vocabulary)."""
    out = []
    pos = 0
    while True:
        if pos == len(data):
            out.append("eof")
            return out
        if len(data) - pos < 4:
            out.append("truncated")
            return out
        (n,) = wire.HEADER.unpack_from(data, pos)
        if n == 0:
            out.append("close")
            return out
        if n > max_frame:
            out.append(f"too_large:{n}")
            return out
        if len(data) - pos - 4 < n:
            out.append("truncated")
            return out
        out.append(f"frame:{n}")
        pos += 4 + n


@pytest.mark.parametrize("v", FRAMING, ids=lambda v: v["name"])
def test_framing(v):
    assert reads(bytes.fromhex(v["bytes"]), v["max_frame"]) == v["reads"]
    if v["response"] is not None:
        raw = frame_bytes(v["response"])
        r = wire.decode_response(raw[4:])
        assert r.id is None and not r.ok
        assert wire.frame(wire.pack(v["response"]["value"])) == raw


def test_split_frames_refuses_zero_and_oversized_lengths():
    with pytest.raises(errors.ProtocolError):
        wire.split_frames(bytearray(b"\x00\x00\x00\x00"))
    with pytest.raises(errors.ProtocolError):
        wire.split_frames(bytearray(b"\xff\xff\xff\xff"), max_frame=wire.DEFAULT_MAX_FRAME)


def test_request_over_max_frame_is_not_sent():
    from vaultd_client.client import check_request_size

    big = wire.encode_request(1, "alias_status", {"alias": "a" * wire.DEFAULT_MAX_FRAME})
    with pytest.raises(errors.FrameTooLarge) as e:
        check_request_size(big, wire.DEFAULT_MAX_FRAME)
    assert not e.value.retryable
    check_request_size(big, None)
    assert Call  # imported for its API
