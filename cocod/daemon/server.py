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
    ProtocolError,
    encode,
    parse_request,
    request_id_of,
)
from cocod.errors import CocodError, SetupOutOfDateError

log = structlog.get_logger(__name__)

Emit = Callable[[dict[str, Any]], Awaitable[None]]
Dispatch = Callable[[Command, dict[str, Any], Emit], Awaitable[Any]]


async def open_listener(path: Path) -> SocketListener:
    """Bind the socket with mode 0600 (owner only) from the first instant."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise CocodError(f"{path} exists and is not a socket; refusing to replace it")
        if _is_live_socket(path):
            raise CocodError(f"another cocod daemon is already listening on {path}")
        path.unlink()
    old_umask = os.umask(0o177)
    try:
        listener = await anyio.create_unix_listener(path)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    return listener


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
    request_id: Any = request_id_of(line)
    try:
        request_id, command, args = parse_request(line)

        async def emit(event: dict[str, Any]) -> None:
            await send({"id": request_id, **event})

        result = await dispatch(command, args, emit)
        reply: dict[str, Any] = {"id": request_id, "ok": True, "result": result}
    except ProtocolError as e:
        reply = _error(request_id, e.code, e.message)
    except SetupOutOfDateError as e:
        reply = _error(request_id, ErrorCode.SETUP_REQUIRED, str(e))
    except CocodError as e:
        reply = _error(request_id, ErrorCode.FLOW_FAILED, str(e))
    except Exception as e:
        log.exception("control.handler_failed", error=str(e))
        reply = _error(request_id, ErrorCode.INTERNAL, f"{type(e).__name__}: {e}")
    await send(reply)


def _error(request_id: Any, code: str, message: str) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": {"code": code, "message": message}}
