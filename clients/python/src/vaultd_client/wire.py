"""Framing and envelopes of PROTOCOL.md v1, and the argument maps of every op.

A frame is a 4-byte big-endian length ``L`` (``1 <= L <= max_frame``) and
``L`` bytes holding exactly one MessagePack value. Maps have string keys;
integers take their smallest MessagePack form, strings are ``str`` (never
``bin``). The argument builders put keys in the order vault-proto's Rust
types do and leave out the same optional keys, so a request is byte for byte
what the Rust client sends (the conformance vectors check it).
"""

from __future__ import annotations

import struct
from typing import Any, Iterable

import msgpack

from .errors import ProtocolError, ServerError, server_error
from .pan import Pan

PROTOCOL_VERSION = 1
DEFAULT_SOCKET = "/run/vaultd/vaultd.sock"
#: The server's default (and this client's check before sending).
DEFAULT_MAX_FRAME = 1024 * 1024
#: Largest answer this client reads (as the Rust client: 16 MiB).
MAX_RESPONSE_FRAME = 16 * DEFAULT_MAX_FRAME
HEADER = struct.Struct(">I")


def _default(obj: Any) -> Any:
    if isinstance(obj, Pan):
        return obj.expose()
    raise TypeError(f"cannot encode a {type(obj).__name__}")


def pack(value: Any) -> bytes:
    """One MessagePack value as the protocol encodes it."""
    return msgpack.packb(value, use_bin_type=True, default=_default)


def unpack(body: bytes) -> Any:
    """Exactly one MessagePack value with string map keys."""
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=True, use_list=True)
    except Exception as e:  # ExtraData, FormatError, ValueError, ...
        raise ProtocolError(f"not one MessagePack value ({type(e).__name__})") from None


def frame(body: bytes) -> bytes:
    """``body`` behind its length header."""
    return HEADER.pack(len(body)) + body


def encode_request(request_id: int, op: str, args: dict | None = None) -> bytes:
    """A framed request ``{v, id, op, args}``; ``args`` None is an empty map."""
    if not isinstance(request_id, int) or not 0 <= request_id < 1 << 64:
        raise ValueError("request id must be a u64")
    return frame(pack({"v": PROTOCOL_VERSION, "id": request_id, "op": op, "args": {} if args is None else args}))


class Response:
    """A decoded response envelope: ``id`` (None when the server could not
    read one), and either ``result`` or ``error``."""

    __slots__ = ("id", "ok", "result", "error")

    def __init__(self, id: int | None, ok: bool, result: Any, error: ServerError | None) -> None:
        self.id = id
        self.ok = ok
        self.result = result
        self.error = error

    def __repr__(self) -> str:  # never the result: it may hold card data
        return f"Response(id={self.id!r}, ok={self.ok!r}, error={self.error!r})"


def decode_response(body: bytes) -> Response:
    v = unpack(body)
    if not isinstance(v, dict):
        raise ProtocolError("response is not a map")
    rid = v.get("id")
    if rid is not None and (not isinstance(rid, int) or isinstance(rid, bool) or rid < 0):
        raise ProtocolError("response id is not a u64")
    ok = v.get("ok")
    if ok is True and "result" in v:
        return Response(rid, True, v["result"], None)
    if ok is False and "error" in v:
        return Response(rid, False, None, server_error(v["error"], rid))
    raise ProtocolError("response is neither ok with a result nor an error")


def split_frames(buf: bytearray, max_frame: int = MAX_RESPONSE_FRAME) -> list[bytes]:
    """Takes every whole frame off the front of ``buf`` (a partial one stays).
    A zero length or one over ``max_frame`` is a protocol error."""
    out = []
    while len(buf) >= 4:
        (n,) = HEADER.unpack_from(buf)
        if n == 0 or n > max_frame:
            raise ProtocolError("bad frame length from the server")
        if len(buf) < 4 + n:
            break
        out.append(bytes(buf[4 : 4 + n]))
        del buf[: 4 + n]
    return out


# ---------------------------------------------------------------- op names

HEALTH = "health"
TOKENIZE = "tokenize"
TRANSACTION_TOKENS = "transaction_tokens"
ALIAS_STATUS = "alias_status"
PROVISION = "provision"
REMOVE_PAN = "remove_pan"
DELETE_ALIAS = "delete_alias"
CREDENTIALS = "credentials"
STATS = "stats"
QUEUE_LIST = "queue_list"
QUEUE_RETRY = "queue_retry"
SCHEME_PAUSE = "scheme_pause"
SCHEME_RESUME = "scheme_resume"
RETENTION = "retention"
PURGE_DUE = "purge_due"
EVENTS = "events"
AUDIT = "audit"
KEY_ROTATE = "key_rotate"
KEY_RETIRE = "key_retire"
BACKUP = "backup"
KEK_REFRESH = "kek_refresh"

# ---------------------------------------------------------------- args
#
# Key order and omitted keys as vault-proto's serde derives them.


def no_args() -> dict:
    return {}


def tokenize_args(pan: Pan | str, exp_month: int, exp_year: int, transaction_id: str | None = None) -> dict:
    a: dict[str, Any] = {"pan": Pan(pan), "exp_month": exp_month, "exp_year": exp_year}
    if transaction_id is not None:
        a["transaction_id"] = transaction_id
    return a


def alias_args(alias: str) -> dict:
    return {"alias": alias}


def transaction_args(transaction_id: str) -> dict:
    return {"transaction_id": transaction_id}


def credentials_args(
    alias: str,
    tenant: str,
    accept: Iterable[str],
    initiator: str,
    amount_minor: int,
    currency: str,
    authenticated_eci: str | None = None,
) -> dict:
    a: dict[str, Any] = {
        "alias": alias,
        "tenant": tenant,
        "accept": list(accept),
        "initiator": initiator,
        "amount_minor": amount_minor,
        "currency": currency,
    }
    if authenticated_eci is not None:
        a["authenticated_eci"] = authenticated_eci
    return a


def queue_list_args(state: str | None = None, limit: int = 0, after: str | None = None) -> dict:
    return {"state": state, "limit": limit, "after": after}


def job_args(job_id: str) -> dict:
    return {"job_id": job_id}


def scheme_args(scheme: str) -> dict:
    return {"scheme": scheme}


def purge_args(tenant: str | None = None) -> dict:
    return {"tenant": tenant}


def page_args(after: int | None = None, limit: int = 0) -> dict:
    return {"after": after, "limit": limit}


def key_rotate_args(key: str | None = None) -> dict:
    return {} if key is None else {"key": key}


def key_retire_args(version: int) -> dict:
    return {"version": version}


def backup_args(path: str) -> dict:
    return {"path": path}


def kek_refresh_args(scheme: str, version: int) -> dict:
    return {"scheme": scheme, "version": version}
