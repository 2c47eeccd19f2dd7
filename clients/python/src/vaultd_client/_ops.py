"""The typed op methods, written once for both clients.

``_call(op, args, timeout)`` is the blocking client's synchronous call and
the asyncio client's coroutine; each method returns what ``_call`` returns.
"""

from __future__ import annotations

from typing import Iterable

from . import wire
from .pan import Pan


class OpsMixin:
    def _call(self, op: str, args: dict, timeout: float | None):  # pragma: no cover
        raise NotImplementedError

    # ---------------------------------------------------------- any role

    def health(self, *, timeout: float | None = None):
        """``Health``."""
        return self._call(wire.HEALTH, wire.no_args(), timeout)

    # ---------------------------------------------------------- cards

    def tokenize(
        self,
        pan: Pan | str,
        exp_month: int,
        exp_year: int,
        transaction_id: str | None = None,
        *,
        timeout: float | None = None,
    ):
        """``TokenizeResult`` (collector, merchant)."""
        return self._call(wire.TOKENIZE, wire.tokenize_args(pan, exp_month, exp_year, transaction_id), timeout)

    def transaction_tokens(self, transaction_id: str, *, timeout: float | None = None):
        """``AliasRecord`` (merchant)."""
        return self._call(wire.TRANSACTION_TOKENS, wire.transaction_args(transaction_id), timeout)

    def alias_status(self, alias: str, *, timeout: float | None = None):
        """``AliasRecord`` (merchant)."""
        return self._call(wire.ALIAS_STATUS, wire.alias_args(alias), timeout)

    def provision(self, alias: str, *, timeout: float | None = None):
        """``AliasRecord`` (merchant)."""
        return self._call(wire.PROVISION, wire.alias_args(alias), timeout)

    def remove_pan(self, alias: str, *, timeout: float | None = None):
        """``AliasRecord`` with ``card.pan_removed`` (merchant)."""
        return self._call(wire.REMOVE_PAN, wire.alias_args(alias), timeout)

    def delete_alias(self, alias: str, *, timeout: float | None = None):
        """``DeleteResult`` (merchant)."""
        return self._call(wire.DELETE_ALIAS, wire.alias_args(alias), timeout)

    def credentials(
        self,
        alias: str,
        tenant: str,
        accept: Iterable[str] = ("network_token", "pan"),
        initiator: str = "customer",
        amount_minor: int = 0,
        currency: str = "EUR",
        authenticated_eci: str | None = None,
        *,
        timeout: float | None = None,
    ):
        """``NetworkTokenCredentials`` or ``PanCredentials`` (forwarder)."""
        args = wire.credentials_args(alias, tenant, accept, initiator, amount_minor, currency, authenticated_eci)
        return self._call(wire.CREDENTIALS, args, timeout)

    # ---------------------------------------------------------- admin

    def stats(self, *, timeout: float | None = None):
        return self._call(wire.STATS, wire.no_args(), timeout)

    def queue_list(self, state: str | None = None, limit: int = 0, after: str | None = None, *, timeout: float | None = None):
        return self._call(wire.QUEUE_LIST, wire.queue_list_args(state, limit, after), timeout)

    def queue_retry(self, job_id: str, *, timeout: float | None = None):
        return self._call(wire.QUEUE_RETRY, wire.job_args(job_id), timeout)

    def scheme_pause(self, scheme: str, *, timeout: float | None = None):
        return self._call(wire.SCHEME_PAUSE, wire.scheme_args(scheme), timeout)

    def scheme_resume(self, scheme: str, *, timeout: float | None = None):
        return self._call(wire.SCHEME_RESUME, wire.scheme_args(scheme), timeout)

    def retention(self, *, timeout: float | None = None):
        return self._call(wire.RETENTION, wire.no_args(), timeout)

    def purge_due(self, tenant: str | None = None, *, timeout: float | None = None):
        return self._call(wire.PURGE_DUE, wire.purge_args(tenant), timeout)

    def events(self, after: int | None = None, limit: int = 0, *, timeout: float | None = None):
        return self._call(wire.EVENTS, wire.page_args(after, limit), timeout)

    def audit(self, after: int | None = None, limit: int = 0, *, timeout: float | None = None):
        return self._call(wire.AUDIT, wire.page_args(after, limit), timeout)

    def key_rotate(self, key: str | None = None, *, timeout: float | None = None):
        return self._call(wire.KEY_ROTATE, wire.key_rotate_args(key), timeout)

    def key_retire(self, version: int, *, timeout: float | None = None):
        return self._call(wire.KEY_RETIRE, wire.key_retire_args(version), timeout)

    def backup(self, path: str, *, timeout: float | None = None):
        return self._call(wire.BACKUP, wire.backup_args(path), timeout)

    def kek_refresh(self, scheme: str, version: int, *, timeout: float | None = None):
        return self._call(wire.KEK_REFRESH, wire.kek_refresh_args(scheme, version), timeout)
