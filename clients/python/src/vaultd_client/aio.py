"""asyncio client: one connection, many requests in flight.

Every call writes its request at once and awaits its own answer, matched by
``id``: ``await asyncio.gather(c.alias_status(a), c.alias_status(b))``
pipelines both over the connection. When the server closes it, calls still
waiting fail with :class:`~vaultd_client.errors.ConnectionLost` (retryable)
and the next call opens a new connection.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from typing import Any

from . import wire
from ._ops import OpsMixin
from .client import _UNSET, check_request_size, default_socket
from .errors import CallTimeout, CannotConnect, ClientClosed, ConnectionLost, ProtocolError
from .types import decode_result


class _AConn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.pending: dict[int, asyncio.Future] = {}
        self.dead: BaseException | None = None
        self.write_lock = asyncio.Lock()
        self.task = asyncio.get_running_loop().create_task(self._read_loop())

    async def _read_loop(self) -> None:
        why: BaseException = ConnectionLost("connection closed by the server")
        try:
            while True:
                head = await self.reader.readexactly(4)
                (n,) = wire.HEADER.unpack(head)
                if n == 0 or n > wire.MAX_RESPONSE_FRAME:
                    raise ProtocolError("bad frame length from the server")
                body = await self.reader.readexactly(n)
                resp = wire.decode_response(body)
                if resp.id is not None:
                    fut = self.pending.pop(resp.id, None)
                    targets = [fut] if fut is not None else []
                else:
                    targets = list(self.pending.values())
                    self.pending.clear()
                for fut in targets:
                    if fut.done():
                        continue
                    if resp.ok:
                        fut.set_result(resp.result)
                    else:
                        fut.set_exception(resp.error)
        except asyncio.IncompleteReadError:
            pass
        except ProtocolError as e:
            why = e
        except (ConnectionError, OSError) as e:
            why = ConnectionLost(f"connection failed: {e.strerror or type(e).__name__}")
        except asyncio.CancelledError:
            why = ClientClosed("client is closed")
        self.kill(why)

    def kill(self, why: BaseException) -> None:
        if self.dead is None:
            self.dead = why
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(why)
        self.pending.clear()
        self.writer.close()


class AsyncClient(OpsMixin):
    """asyncio twin of :class:`~vaultd_client.Client` (same options, same
    typed methods, each a coroutine)."""

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
        self._conn: _AConn | None = None
        self._connect_lock: asyncio.Lock | None = None
        self._ids = itertools.count(1)
        self._closed = False

    async def connect(self) -> "AsyncClient":
        await self._connection()
        return self

    async def _connection(self) -> _AConn:
        if self._closed:
            raise ClientClosed("client is closed")
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if self._conn is None or self._conn.dead is not None:
                try:
                    r, w = await asyncio.wait_for(
                        asyncio.open_unix_connection(self.path, limit=wire.MAX_RESPONSE_FRAME + 4),
                        self.connect_timeout,
                    )
                except asyncio.TimeoutError:
                    raise CannotConnect(f"cannot connect to {self.path}: timed out") from None
                except OSError as e:
                    raise CannotConnect(f"cannot connect to {self.path}: {e.strerror or type(e).__name__}") from None
                self._conn = _AConn(r, w)
            return self._conn

    async def close(self) -> None:
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.task.cancel()
            conn.kill(ClientClosed("client is closed"))
            try:
                await conn.writer.wait_closed()
            except (OSError, ConnectionError):
                pass

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def call(self, op: str, args: dict | None = None, *, timeout: float | None = _UNSET) -> Any:
        """One op by name: its typed result."""
        if timeout is _UNSET:
            timeout = self.timeout
        rid = next(self._ids)
        framed = wire.encode_request(rid, op, args)
        check_request_size(framed, self.max_frame)
        loop = asyncio.get_running_loop()
        for attempt in (0, 1):
            conn = await self._connection()
            fut = loop.create_future()
            conn.pending[rid] = fut
            if conn.dead is not None:
                # It ended meanwhile: nothing was written; take a new one.
                conn.pending.pop(rid, None)
                if attempt == 1:
                    raise ConnectionLost("connection closed by the server")
                continue
            try:
                async with conn.write_lock:
                    conn.writer.write(framed)
                    await asyncio.wait_for(conn.writer.drain(), timeout)
                break
            except (BrokenPipeError, ConnectionResetError):
                # As the blocking client: an answer read before the end is
                # this call's outcome; with none, send once more.
                try:
                    await asyncio.wait_for(asyncio.shield(conn.task), timeout)
                except (asyncio.TimeoutError, asyncio.CancelledError):
                    pass
                if fut.done():
                    break
                conn.pending.pop(rid, None)
                conn.kill(ConnectionLost("connection closed by the server"))
                if attempt == 1:
                    raise ConnectionLost("connection closed by the server") from None
            except asyncio.TimeoutError:
                conn.kill(ConnectionLost("the server stopped reading requests"))
                raise CallTimeout(f"could not write {op} within {timeout} s") from None
        try:
            raw = await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            conn.pending.pop(rid, None)
            raise CallTimeout(f"no answer to {op} within {timeout} s") from None
        return decode_result(op, raw)

    def _call(self, op: str, args: dict, timeout: float | None):
        return self.call(op, args, timeout=self.timeout if timeout is None else timeout)
