"""Errors: one class per PROTOCOL.md error code, plus the client's own.

Every error carries ``retryable``. Messages are the server's (which never
contain card data) or the client's own (which never quote arguments).
"""

from __future__ import annotations


class VaultdError(Exception):
    """Base of every error this package raises."""

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable


class ServerError(VaultdError):
    """The server answered with an error object ``{code, message, retryable}``."""

    code: str = ""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retryable: bool | None = None,
        request_id: int | None = None,
    ) -> None:
        super().__init__(message, retryable=retryable)
        if code is not None:
            self.code = code
        self.request_id = request_id

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, retryable={self.retryable!r})"


def _code(name: str, code: str, retryable: bool, doc: str) -> type[ServerError]:
    return type(name, (ServerError,), {"code": code, "retryable": retryable, "__doc__": doc})


BadRequest = _code("BadRequest", "bad_request", False, "Malformed request, wrong types, unknown keys.")
UnsupportedVersion = _code("UnsupportedVersion", "unsupported_version", False, "`v` is not 1.")
UnknownOp = _code("UnknownOp", "unknown_op", False, "No such op.")
FrameTooLarge = _code("FrameTooLarge", "frame_too_large", False, "Frame over max_frame; the server closed the connection.")
Unauthenticated = _code("Unauthenticated", "unauthenticated", False, "The peer uid is not configured.")
Forbidden = _code("Forbidden", "forbidden", False, "Op not allowed for the client's roles or tenant.")
InvalidPan = _code("InvalidPan", "invalid_pan", False, "Not 12-19 digits, or the Luhn check fails.")
InvalidExpiry = _code("InvalidExpiry", "invalid_expiry", False, "Month or year out of range, or in the past.")
AliasNotFound = _code("AliasNotFound", "alias_not_found", False, "Unknown alias (or another tenant's).")
TransactionNotFound = _code("TransactionNotFound", "transaction_not_found", False, "Unknown or expired transaction id.")
PanRequired = _code("PanRequired", "pan_required", False, "remove_pan without an active network token.")
NoUsableCredential = _code("NoUsableCredential", "no_usable_credential", False, "credentials found nothing the receiver accepts.")
NetworkTokenRequired = _code("NetworkTokenRequired", "network_token_required", False, "The tenant stores no PANs and the card cannot get a network token.")
RateLimited = _code("RateLimited", "rate_limited", True, "The client passed its rate for PAN-returning credentials.")
Overloaded = _code("Overloaded", "overloaded", True, "The server sheds load.")
Unavailable = _code("Unavailable", "unavailable", True, "HSM or store temporarily failing; nothing was written.")
ShuttingDown = _code("ShuttingDown", "shutting_down", True, "The server is stopping.")
Internal = _code("Internal", "internal", False, "A bug; details only in the server's log.")

#: Every code of PROTOCOL.md, in its order, to its class.
ERROR_CLASSES: dict[str, type[ServerError]] = {
    c.code: c
    for c in (
        BadRequest,
        UnsupportedVersion,
        UnknownOp,
        FrameTooLarge,
        Unauthenticated,
        Forbidden,
        InvalidPan,
        InvalidExpiry,
        AliasNotFound,
        TransactionNotFound,
        PanRequired,
        NoUsableCredential,
        NetworkTokenRequired,
        RateLimited,
        Overloaded,
        Unavailable,
        ShuttingDown,
        Internal,
    )
}


def server_error(obj: object, request_id: int | None = None) -> ServerError:
    """The exception for a wire error object. An unknown code (a newer
    server) gives a plain :class:`ServerError` with the wire's ``retryable``."""
    if not isinstance(obj, dict):
        raise ProtocolError("error object is not a map")
    code = obj.get("code")
    message = obj.get("message")
    retryable = obj.get("retryable")
    if not isinstance(code, str) or not isinstance(message, str) or not isinstance(retryable, bool):
        raise ProtocolError("error object lacks code, message or retryable")
    cls = ERROR_CLASSES.get(code, ServerError)
    return cls(message, code=code, retryable=retryable, request_id=request_id)


class ClientError(VaultdError):
    """An error on this side of the socket."""


class CannotConnect(ClientError):
    """The socket could not be reached (no daemon, wrong path, permissions)."""

    retryable = True


class ConnectionLost(ClientError):
    """The connection ended before the answer came. The request may or may not
    have been carried out; PROTOCOL.md lets a client retry it."""

    retryable = True


class CallTimeout(ClientError, TimeoutError):
    """No answer within the call's timeout. A late answer is dropped; the
    request may still be carried out."""

    retryable = True


class ProtocolError(ClientError):
    """The server's bytes do not follow PROTOCOL.md (or the client is closed)."""


class ClientClosed(ClientError):
    """The client was closed."""

__all__ = [n for n, v in list(globals().items()) if isinstance(v, type) and issubclass(v, VaultdError)] + [
    "ERROR_CLASSES",
    "server_error",
]
