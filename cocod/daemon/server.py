"""The control socket: newline-delimited JSON requests, one task per connection.

A malformed line gets an error reply and the connection stays usable; an oversize line
gets an error reply and the connection is closed; a client that vanishes mid-request only
ends its own task. Nothing a client sends can disturb the daemon or other clients.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import SocketListener, SocketStream, TaskStatus
from anyio.streams.buffered import BufferedByteReceiveStream

from cocod.control.protocol import (
    MAX_LINE_BYTES,
    Command,
    ErrorCode,
    encode,
    parse_request,
)
from cocod.daemon.ownership import NotOwnerError
from cocod.errors import (
    CocodError,
    DatabaseError,
    DatabaseUnavailableError,
    ProtocolError,
    SettingsError,
    SetupOutOfDateError,
)

log = structlog.get_logger(__name__)

Emit = Callable[[dict[str, Any]], Awaitable[None]]
Dispatch = Callable[[Command, dict[str, Any], Emit], Awaitable[Any]]


async def open_listener(path: Path) -> SocketListener:
    """Bind the socket with mode 0600 (owner only) from the first instant."""
    # Folder creation, the stale-socket check and its 0.5 s liveness probe are blocking
    # file-system and socket calls: they run in a worker thread, not on the loop.
    await anyio.to_thread.run_sync(_prepare_socket_path, path)
    old_umask = os.umask(0o177)
    try:
        listener = await anyio.create_unix_listener(path)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    return listener


def _prepare_socket_path(path: Path) -> None:
    """Create the socket's folder, and remove a socket file no daemon answers on."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise SettingsError(
                f"{path} exists and is not a socket; refusing to replace it "
                "(remove it, or set [daemon] socket / COCOD_SOCKET to another path)"
            )
        if _is_live_socket(path):
            raise SettingsError(
                f"another cocod daemon is already listening on {path}; stop it "
                "(`cocod shutdown`) or give this one another socket (COCOD_SOCKET)"
            )
        path.unlink()


def _is_live_socket(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


async def serve_control(
    listener: SocketListener,
    dispatch: Dispatch,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    async with listener:
        task_status.started()
        await listener.serve(lambda stream: _serve_connection(stream, dispatch))


async def _serve_connection(stream: SocketStream, dispatch: Dispatch) -> None:
    reader = BufferedByteReceiveStream(stream)
    send_lock = anyio.Lock()

    async def send(message: dict[str, Any]) -> None:
        async with send_lock:
            await stream.send(encode(message))

    try:
        async with stream:
            while True:
                try:
                    line = await reader.receive_until(b"\n", MAX_LINE_BYTES)
                    is_too_large = len(line) >= MAX_LINE_BYTES
                except anyio.DelimiterNotFound:
                    is_too_large = True
                if is_too_large:
                    # receive_until may return a longer line that was already buffered.
                    message = f"request over {MAX_LINE_BYTES} bytes; closing the connection"
                    await send(_error(None, ErrorCode.TOO_LARGE, message))
                    return
                if not line.strip():
                    continue
                await _handle_line(line, dispatch, send)
    except (anyio.IncompleteRead, anyio.EndOfStream, anyio.BrokenResourceError, OSError):
        return  # the client went away


async def _handle_line(line: bytes, dispatch: Dispatch, send: Emit) -> None:
    """Answer one line; whatever goes wrong becomes this line's error reply."""
    request_id: Any = None
    try:
        request = parse_request(line)
        request_id = request.id

        async def emit(event: dict[str, Any]) -> None:
            await send({"id": request_id, **event})

        result = await dispatch(request.command, request.args, emit)
        reply: dict[str, Any] = {"id": request_id, "ok": True, "result": result}
    except (Exception, SystemExit) as e:  # SystemExit: user code (a factory) calling exit()
        if isinstance(e, ProtocolError) and e.request_id is not None:
            request_id = e.request_id
        code, message = error_reply_of(e)
        reply = _error(request_id, code, message)
    try:
        encode(reply)
    except (TypeError, ValueError) as e:  # e.g. a NaN in a result: never send invalid JSON
        log.error("control.reply_unencodable", error=str(e))
        reply = _error(request_id, ErrorCode.INTERNAL, f"the reply could not be encoded: {e}")
    await send(reply)


ERROR_CODES: tuple[tuple[type[BaseException], str | None], ...] = (
    (ProtocolError, None),  # None: the error carries its own code
    (NotOwnerError, ErrorCode.NOT_OWNER),
    (SetupOutOfDateError, ErrorCode.SETUP_REQUIRED),
    (DatabaseUnavailableError, ErrorCode.DATABASE_UNAVAILABLE),
    (DatabaseError, ErrorCode.DATABASE_ERROR),
    (SettingsError, ErrorCode.BAD_CONFIG),
    (CocodError, ErrorCode.FLOW_FAILED),
)
"""Exception type → wire code. The most specific class in the exception's MRO that has an
entry decides, so the order here does not matter and a new subclass inherits the code of
its nearest listed ancestor. Anything outside the tree is ``internal``."""

_CODE_OF: dict[type[BaseException], str | None] = dict(ERROR_CODES)


def _leaf(error: BaseException) -> BaseException:
    """A group holding one exception (a task group inside a handler) stands for it."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def error_code_of(error: BaseException) -> str:
    """The wire code for ``error``, by walking its MRO through :data:`ERROR_CODES`."""
    error = _leaf(error)
    for cls in type(error).__mro__:
        if cls in _CODE_OF:
            code = _CODE_OF[cls]
            if code is None:
                return str(getattr(error, "code", ErrorCode.INTERNAL))
            return code
    return ErrorCode.INTERNAL


def error_reply_of(error: BaseException) -> tuple[str, str]:
    """(code, one-line message) for an error reply. Unexpected errors are logged with their
    traceback here; the client gets their type and message only, never the traceback."""
    error = _leaf(error)
    code = error_code_of(error)
    message = " ".join(str(error).split()) or type(error).__name__
    if code == ErrorCode.INTERNAL:
        log.error(
            "control.handler_failed", error=f"{type(error).__name__}: {error}", exc_info=error
        )
        message = f"{type(error).__name__}: {message}"
    return code, message


def _error(request_id: Any, code: str, message: str) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": {"code": code, "message": message}}
