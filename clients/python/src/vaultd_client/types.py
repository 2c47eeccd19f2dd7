"""Typed results: one frozen dataclass per result shape of PROTOCOL.md (and
of the README's additive extensions).

Decoding is lenient where the protocol allows growth: keys a newer server
adds are kept in ``extra`` (not shown by ``repr``); a missing required key
or a wrong type is a :class:`~vaultd_client.errors.ProtocolError` that names
the key, never its value. Enumerations (token status, job state, ...) are
plain strings, so a newer server's value does not break an older client.
"""

from __future__ import annotations

import dataclasses as _dc
import types as _pytypes
import typing as _typing
from dataclasses import dataclass, field
from typing import Any, Union

from .errors import ProtocolError
from .pan import Pan

_EXTRA = dict(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, kw_only=True)
class Health:
    ready: bool
    version: str
    hsm: str
    store: str
    uptime_ms: int
    extra: dict = field(**_EXTRA)


@dataclass(frozen=True, kw_only=True)
class TokenInfo:
    """The network token as merchants see it (never its number)."""

    status: str
    scheme: str
    token_ref: str | None
    token_last4: str | None
    exp_month: int | None
    exp_year: int | None
    par: str | None
    token_requestor_id: str | None
    updated_at: int
    last_error: str | None
    extra: dict = field(**_EXTRA)


@dataclass(frozen=True, kw_only=True)
class Card:
    bin: str
    last4: str
    exp_month: int
    exp_year: int
    scheme: str
    pan_removed: bool
    extra: dict = field(**_EXTRA)


@dataclass(frozen=True, kw_only=True)
class AliasRecord:
    alias: str
    fingerprint: str
    type: str
    masked: str
    created_at: int
    card: Card
    token_info: TokenInfo | None
    extra: dict = field(**_EXTRA)


@dataclass(frozen=True, kw_only=True)
class TokenizeResult(AliasRecord):
    """``{created} + alias_record``, flattened."""

    created: bool


@dataclass(frozen=True, kw_only=True)
class DeleteResult:
    deleted: bool
    extra: dict = field(**_EXTRA)


@dataclass(frozen=True, kw_only=True)
class NetworkTokenCredentials:
    """``credentials`` answered with the network token. ``repr`` shows the
    token number masked and never the cryptogram."""

    kind: str
    scheme: str
    network_token: Pan
    exp_month: int
    exp_year: int
    cryptogram: str | None = field(repr=False)
    eci: str | None
    atc: int | None
    par: str | None
    token_ref: str
    extra: dict = field(**_EXTRA)


@dataclass(frozen=True, kw_only=True)
class PanCredentials:
    """``credentials`` answered with the PAN (masked by ``repr``)."""

    kind: str
    scheme: str
    pan: Pan
    exp_month: int
    exp_year: int
    fallback_reason: str
    extra: dict = field(**_EXTRA)


Credentials = Union[NetworkTokenCredentials, PanCredentials]


@dataclass(frozen=True, kw_only=True)
class QueueCounts:
    due: int
    scheduled: int
    in_flight: int
    failed: int
    reads: int = 0
    extra: dict = field(**_EXTRA)


@dataclass(frozen=True, kw_only=True)
class SchemeStats:
    provisioned: int
    not_eligible: int
    errors: int
    p50_ms: int
    p99_ms: int
    paused: bool
    breaker: str | None = None
    extra: dict = field(**_EXTRA)


@dataclass(frozen=True, kw_only=True)
class KekUse:
    scheme: str
    version: int
    tokens: int
    extra: dict = field(**_EXTRA)


@dataclass(frozen=True, kw_only=True)
class KeyStats:
    pan_key_version: int
    audit_key_version: int
    reencrypt_remaining: int
    reencrypted: int
    keks: list[KekUse] = field(default_factory=list)
    extra: dict = field(**_EXTRA)


@dataclass(frozen=True, kw_only=True)
class LogHeads:
    audit_seq: int
    events_seq: int
    extra: dict = field(**_EXTRA)


@dataclass(frozen=True, kw_only=True)
class HsmStats:
    reinit_after_objects: int
    session_objects: int
    reinitializations: int
    last_reinit_pause_ms: int
    key_copies_made: int
    standby_switches: int = 0
    background_queued: int = 0
    background_done: int = 0
    token_key_unwraps: int = 0
    token_keys_cached: int = 0
    extra: dict = field(**_EXTRA)


@dataclass(frozen=True, kw_only=True)
class Stats:
    aliases: int
    pans_retained: int
    tokens: dict[str, int]
    queue: QueueCounts
    schemes: dict[str, SchemeStats]
    uptime_ms: int
    keys: KeyStats | None = None
    logs: LogHeads | None = None
    hsm: HsmStats | None = None
    extra: dict = field(**_EXTRA)


@dataclass(frozen=True, kw_only=True)
class Job:
    job_id: str
    alias: str
    kind: str
    scheme: str
    state: str
    attempts: int
    next_at: int
    last_error: str | None
    extra: dict = field(**_EXTRA)


@dataclass(frozen=True, kw_only=True)
class QueueList:
    jobs: list[Job]
    next: str | None
    extra: dict = field(**_EXTRA)


@dataclass(frozen=True, kw_only=True)
class QueueRetryResult:
    job_id: str
    state: str
    extra: dict = field(**_EXTRA)


@dataclass(frozen=True, kw_only=True)
class SchemePaused:
    scheme: str
    paused: bool
    extra: dict = field(**_EXTRA)


@dataclass(frozen=True, kw_only=True)
class TenantRetention:
    tenant: str
    policy: str
    pans_retained: int
    due_now: int
    due_7d: int
    due_30d: int
    purged_total: int
    oldest_retained_at: int | None
    extra: dict = field(**_EXTRA)


@dataclass(frozen=True, kw_only=True)
class Retention:
    tenants: list[TenantRetention]
    next_purge_at: int | None
    extra: dict = field(**_EXTRA)


@dataclass(frozen=True, kw_only=True)
class PurgeResult:
    purged: int
    extra: dict = field(**_EXTRA)


@dataclass(frozen=True, kw_only=True)
class Event:
    seq: int
    at: int
    alias: str | None
    scheme: str | None
    kind: str
    detail: str
    extra: dict = field(**_EXTRA)


@dataclass(frozen=True, kw_only=True)
class Events:
    events: list[Event]
    extra: dict = field(**_EXTRA)


@dataclass(frozen=True, kw_only=True)
class AuditRecord:
    seq: int
    at: int
    client: str
    uid: int
    pid: int
    op: str
    alias: str | None
    outcome: str
    extra: dict = field(**_EXTRA)


@dataclass(frozen=True, kw_only=True)
class Audit:
    records: list[AuditRecord]
    chain_ok: bool
    extra: dict = field(**_EXTRA)


@dataclass(frozen=True, kw_only=True)
class KeyRotateResult:
    key: str
    version: int
    extra: dict = field(**_EXTRA)


@dataclass(frozen=True, kw_only=True)
class KeyRetireResult:
    label: str
    destroyed: bool
    extra: dict = field(**_EXTRA)


@dataclass(frozen=True, kw_only=True)
class BackupResult:
    path: str
    aliases: int
    pans: int
    audit_seq: int
    extra: dict = field(**_EXTRA)


@dataclass(frozen=True, kw_only=True)
class KekRefreshResult:
    scheme: str
    version: int
    queued: int
    extra: dict = field(**_EXTRA)


# ---------------------------------------------------------------- decoding

_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    h = _HINTS.get(cls)
    if h is None:
        h = _typing.get_type_hints(cls)
        _HINTS[cls] = h
    return h


def _conv(tp: Any, v: Any, where: str) -> Any:
    origin = _typing.get_origin(tp)
    if origin in (Union, _pytypes.UnionType):
        opts = _typing.get_args(tp)
        if v is None and type(None) in opts:
            return None
        inner = [t for t in opts if t is not type(None)]
        return _conv(inner[0], v, where)
    if tp is Pan:
        if not isinstance(v, str):
            raise ProtocolError(f"`{where}` is not a string")
        return Pan(v)
    if origin is list:
        if not isinstance(v, list):
            raise ProtocolError(f"`{where}` is not an array")
        (item,) = _typing.get_args(tp)
        return [_conv(item, x, f"{where}[]") for x in v]
    if origin is dict:
        if not isinstance(v, dict):
            raise ProtocolError(f"`{where}` is not a map")
        _, item = _typing.get_args(tp)
        return {k: _conv(item, x, f"{where}.{k}") for k, x in v.items()}
    if _dc.is_dataclass(tp):
        return from_wire(tp, v, where)
    if tp is bool:
        ok = isinstance(v, bool)
    elif tp is int:
        ok = isinstance(v, int) and not isinstance(v, bool)
    elif tp is str:
        ok = isinstance(v, str)
    elif tp is dict:
        ok = isinstance(v, dict)
    else:  # pragma: no cover - every field type is handled above
        ok = True
    if not ok:
        raise ProtocolError(f"`{where}` is not a {tp.__name__}")
    return v


def from_wire(cls: type, v: Any, where: str = "result") -> Any:
    """Builds ``cls`` from a decoded result map."""
    if not isinstance(v, dict):
        raise ProtocolError(f"`{where}` is not a map")
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    known = set()
    for f in _dc.fields(cls):
        if f.name == "extra":
            continue
        known.add(f.name)
        if f.name in v:
            kwargs[f.name] = _conv(hints[f.name], v[f.name], f"{where}.{f.name}")
        elif f.default is _dc.MISSING and f.default_factory is _dc.MISSING:
            # Absent means nil for an optional field; a required one is missing.
            if type(None) in _typing.get_args(hints[f.name]):
                kwargs[f.name] = None
            else:
                raise ProtocolError(f"missing `{where}.{f.name}`")
    kwargs["extra"] = {k: x for k, x in v.items() if k not in known}
    return cls(**kwargs)


def credentials_from_wire(v: Any) -> Credentials:
    kind = v.get("kind") if isinstance(v, dict) else None
    if kind == "network_token":
        return from_wire(NetworkTokenCredentials, v)
    if kind == "pan":
        return from_wire(PanCredentials, v)
    raise ProtocolError("credentials result has no known `kind`")


def _decoder(cls: type):
    return lambda v: from_wire(cls, v)


#: op name → decoder of its result.
RESULTS = {
    "health": _decoder(Health),
    "tokenize": _decoder(TokenizeResult),
    "transaction_tokens": _decoder(AliasRecord),
    "alias_status": _decoder(AliasRecord),
    "provision": _decoder(AliasRecord),
    "remove_pan": _decoder(AliasRecord),
    "delete_alias": _decoder(DeleteResult),
    "credentials": credentials_from_wire,
    "stats": _decoder(Stats),
    "queue_list": _decoder(QueueList),
    "queue_retry": _decoder(QueueRetryResult),
    "scheme_pause": _decoder(SchemePaused),
    "scheme_resume": _decoder(SchemePaused),
    "retention": _decoder(Retention),
    "purge_due": _decoder(PurgeResult),
    "events": _decoder(Events),
    "audit": _decoder(Audit),
    "key_rotate": _decoder(KeyRotateResult),
    "key_retire": _decoder(KeyRetireResult),
    "backup": _decoder(BackupResult),
    "kek_refresh": _decoder(KekRefreshResult),
}


def decode_result(op: str, result: Any) -> Any:
    """The typed result of ``op``; an op this client does not know gives the
    raw decoded value."""
    dec = RESULTS.get(op)
    return result if dec is None else dec(result)

__all__ = [n for n, v in list(globals().items()) if isinstance(v, type) and v.__module__ == __name__] + [
    "Credentials",
    "RESULTS",
    "credentials_from_wire",
    "decode_result",
    "from_wire",
]
