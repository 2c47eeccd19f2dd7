"""Blocking client: one Unix socket connection, many requests in flight.

``submit`` writes a request and returns a :class:`Call` at once; answers are
read by a background thread and matched by ``id`` whatever their order
(pipelining). The typed methods (``tokenize``, ``alias_status``, ...) are
``submit(...).result()``. One client may be shared by threads.

When the server closes the connection (idle timeout, restart,
``frame_too_large``), calls still waiting fail with
:class:`~vaultd_client.errors.ConnectionLost` (retryable) and the next call
opens a new connection.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
from typing import Any

from . import wire
from ._ops import OpsMixin
from .errors import (
    CallTimeout,
    CannotConnect,
    ClientClosed,
    ConnectionLost,
    FrameTooLarge,
    ProtocolError,
    VaultdError,
)
from .types import decode_result

_UNSET: Any = object()


def default_socket() -> str:
    """``$VAULTD_SOCKET``, else PROTOCOL.md's default path."""
    return os.environ.get("VAULTD_SOCKET") or wire.DEFAULT_SOCKET


def check_request_size(framed: bytes, max_frame: int | None) -> None:
    if max_frame is not None and len(framed) - 4 > max_frame:
        raise FrameTooLarge(
            f"request frame longer than max_frame ({max_frame} bytes); not sent",
            code="frame_too_large",
            retryable=False,
        )


class Call:
    """A request in flight. :meth:`result` waits for its answer."""

    __slots__ = ("op", "id", "_client", "_conn", "_event", "_raw", "_error")

    def __init__(self, client: "Client", conn: "_Conn", op: str, rid: int) -> None:
        self.op = op
        self.id = rid
        self._client = client
        self._conn = conn
        self._event = threading.Event()
        self._raw: Any = None
        self._error: BaseException | None = None

    def _finish(self, raw: Any = None, error: BaseException | None = None) -> None:
        if not self._event.is_set():
            self._raw, self._error = raw, error
            self._event.set()

    def done(self) -> bool:
        return self._event.is_set()

    def result(self, timeout: float | None = _UNSET) -> Any:
        """The typed result, or raises the server's error (a
        :class:`~vaultd_client.errors.ServerError` subclass) or the client's.
        ``timeout`` defaults to the client's."""
        if timeout is _UNSET:
            timeout = self._client.timeout
        if not self._event.wait(timeout):
            self._conn.forget(self.id)
            if not self._event.is_set():
                raise CallTimeout(f"no answer to {self.op} within {timeout} s")
        if self._error is not None:
            raise self._error
        return decode_result(self.op, self._raw)

    def __repr__(self) -> str:
        return f"Call(op={self.op!r}, id={self.id}, done={self.done()})"


class _Conn:
    """One connection and its reader thread."""

    def __init__(self, path: str, connect_timeout: float | None, io_timeout: float | None) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(connect_timeout)
            sock.connect(path)
        except OSError as e:
            sock.close()
            raise CannotConnect(f"cannot connect to {path}: {e.strerror or type(e).__name__}") from None
        # One timeout for both directions: recv wakes up to look at `dead`,
        # sendall gives up on a server that stopped reading for that long.
        sock.settimeout(io_timeout if io_timeout is not None else 60.0)
        self.sock = sock
        self.lock = threading.Lock()
        self.write_lock = threading.Lock()
        self.pending: dict[int, Call] = {}
        self.dead: BaseException | None = None
        self.thread = threading.Thread(target=self._read_loop, name="vaultd-client-reader", daemon=True)
        self.thread.start()

    def register(self, call: Call) -> None:
        with self.lock:
            if self.dead is not None:
                raise self.dead
            self.pending[call.id] = call

    def forget(self, rid: int) -> None:
        with self.lock:
            self.pending.pop(rid, None)

    def send(self, framed: bytes) -> None:
        with self.write_lock:
            self.sock.sendall(framed)

    def _dispatch(self, body: bytes) -> None:
        resp = wire.decode_response(body)
        with self.lock:
            if resp.id is not None:
                call = self.pending.pop(resp.id, None)
                targets = [call] if call is not None else []
            else:
                # No id (an envelope the server could not read, a frame too
                # large, a refused connection): every waiter gets it, as the
                # Rust client does.
                targets = list(self.pending.values())
                self.pending.clear()
        for call in targets:
            if resp.ok:
                call._finish(raw=resp.result)
            else:
                call._finish(error=resp.error)

    def _read_loop(self) -> None:
        buf = bytearray()
        why: BaseException = ConnectionLost("connection closed by the server")
        try:
            while self.dead is None:
                try:
                    chunk = self.sock.recv(65536)
                except socket.timeout:
                    continue
                except OSError as e:
                    why = ConnectionLost(f"connection failed: {e.strerror or type(e).__name__}")
                    break
                if not chunk:
                    break
                buf += chunk
                for body in wire.split_frames(buf):
                    self._dispatch(body)
        except ProtocolError as e:
            why = e
        except VaultdError as e:  # pragma: no cover - defensive
            why = e
        self.kill(why)
        buf[:] = bytes(len(buf))

    def kill(self, why: BaseException) -> None:
        with self.lock:
            if self.dead is None:
                self.dead = why
            calls = list(self.pending.values())
            self.pending.clear()
        for c in calls:
            c._finish(error=why)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def release(self) -> None:
        """Closes the socket once no write can be using it."""
        with self.write_lock:
            self.sock.close()


class Client(OpsMixin):
    """Blocking, pipelining client of vaultd.

    ``timeout`` (seconds, default 30) bounds each call's wait for its answer
    and a write to a server that stopped reading; ``connect_timeout`` bounds
    the connect. ``max_frame`` (default 1 MiB, PROTOCOL.md's upper bound)
    refuses to send a larger request (``None``: send anything).
    """

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        timeout: float | None = 30.0,
        connect_timeout: float | None = 5.0,
        max_frame: int | None = wire.DEFAULT_MAX_FRAME,
    ) -> None:
        self.path = os.fspath(path) if path is not None else default_socket()
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_frame = max_frame
        self._lock = threading.Lock()
        self._conn: _Conn | None = None
        self._ids = itertools.count(1)
        self._closed = False

    # ---------------------------------------------------------- lifecycle

    def connect(self) -> "Client":
        """Connects now (calls connect by themselves when needed)."""
        self._connection()
        return self

    def _connection(self) -> _Conn:
        with self._lock:
            if self._closed:
                raise ClientClosed("client is closed")
            if self._conn is None or self._conn.dead is not None:
                if self._conn is not None:
                    self._conn.release()
                self._conn = _Conn(self.path, self.connect_timeout, self.timeout)
            return self._conn

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.kill(ClientClosed("client is closed"))
            conn.thread.join(5)
            conn.release()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------- calls

    def submit(self, op: str, args: dict | None = None) -> Call:
        """Writes one request and returns without waiting for its answer."""
        with self._lock:
            rid = next(self._ids)
        framed = wire.encode_request(rid, op, args)
        check_request_size(framed, self.max_frame)
        # A connection the server closed while idle is noticed by its reader
        # (EOF) and replaced here; a write that finds the peer gone before
        # any byte was taken is sent once more on a new connection.
        for attempt in (0, 1):
            conn = self._connection()
            call = Call(self, conn, op, rid)
            try:
                conn.register(call)
            except ConnectionLost:
                # It ended between the look and the registration: nothing
                # was written; take a new one.
                if attempt == 1:
                    raise
                continue
            try:
                conn.send(framed)
                return call
            except socket.timeout:
                conn.kill(ConnectionLost("the server stopped reading requests"))
                raise CallTimeout(f"could not write {op} within {self.timeout} s") from None
            except OSError:
                # The server closed the connection (EPIPE, ECONNRESET). Its
                # reader sees the end at once: an answer it read first
                # (frame_too_large, say) is this call's outcome; with none,
                # the server closed before reading the request, and it is
                # sent once more on a new connection.
                conn.thread.join(self.timeout)
                if call.done():
                    return call
                conn.kill(ConnectionLost("connection closed by the server"))
                if attempt == 1:
                    raise ConnectionLost("connection closed by the server") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def call(self, op: str, args: dict | None = None, *, timeout: float | None = _UNSET) -> Any:
        """One op by name: its typed result (raw for an op this client does not know)."""
        return self.submit(op, args).result(timeout)

    def _call(self, op: str, args: dict, timeout: float | None) -> Any:
        return self.submit(op, args).result(self.timeout if timeout is None else timeout)
