"""Test-wide settings: no network, a non-interactive matplotlib backend, offline hubs.

Network: any connection to a host other than localhost raises ``NetworkBlockedError`` at once,
so a test that would reach the internet fails loudly instead of hanging or passing by luck.
Tests that need loopback (the JupyterLab browser test) still work.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0", ""}


class NetworkBlockedError(OSError):
    """Raised when a test tries to reach a non-local host."""


def _host_of(address: object) -> str | None:
    if isinstance(address, tuple) and address:
        return str(address[0])
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return None
    return None


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _guard(address: object) -> None:
    host = _host_of(address)
    if host is not None and host not in _LOCAL_HOSTS and not host.startswith("127."):
        raise NetworkBlockedError(f"network access to {host!r} is blocked in cfviz tests")


def _connect(self: socket.socket, address: object) -> None:
    _guard(address)
    return _real_connect(self, address)


def _connect_ex(self: socket.socket, address: object) -> int:
    _guard(address)
    return _real_connect_ex(self, address)


def _getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
    if host is not None:
        name = host.decode() if isinstance(host, bytes) else str(host)
        _guard((name, 0))
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True, scope="session")
def _block_network():
    socket.socket.connect = _connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = _getaddrinfo  # type: ignore[assignment]
    try:
        yield
    finally:
        socket.socket.connect = _real_connect  # type: ignore[method-assign]
        socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]
        socket.getaddrinfo = _real_getaddrinfo  # type: ignore[assignment]


@contextmanager
def _read_only(folder: Path) -> Iterator[None]:
    """``folder`` as on a read-only mount: every write, rename, delete or new file under it fails (EROFS).

    Tests run as root, which ignores permission bits, so chmod alone cannot make a folder
    read-only; the file-system calls that change anything (``os.open`` and ``open`` for writing,
    ``os.replace``, ``rename``, ``unlink``, ``remove``, ``mkdir``, ``rmdir``, ``chmod``; pathlib and
    tempfile go through them) are patched instead. For a non-root user the permission bits are
    cleared as well.
    """
    folder = folder.resolve()

    def inside(path: object) -> bool:
        try:
            return Path(os.fsdecode(path)).resolve().is_relative_to(folder)  # type: ignore[arg-type]
        except (TypeError, ValueError):  # a file descriptor, not a path
            return False

    def guard(real, writes=None):  # type: ignore[no-untyped-def]
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            if args and inside(args[0]) and (writes is None or writes(*args, **kwargs)):
                raise OSError(errno.EROFS, "Read-only file system", os.fsdecode(args[0]))
            return real(*args, **kwargs)
        return wrapper

    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    for_writing = (lambda f, mode="r", *a, **k: isinstance(mode, str) and any(c in mode for c in "wax+"))
    modes = {}
    if os.geteuid() != 0:
        for p in [folder, *folder.rglob("*")]:
            modes[p] = p.stat().st_mode
            p.chmod(modes[p] & ~0o222)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(os, "open", guard(os.open, lambda p, flags, *a, **k: bool(flags & write_flags)))
            mp.setattr(builtins, "open", guard(builtins.open, for_writing))
            mp.setattr(io, "open", guard(io.open, for_writing))
            for name in ("replace", "rename", "unlink", "remove", "mkdir", "rmdir", "chmod"):
                mp.setattr(os, name, guard(getattr(os, name)))
            yield
    finally:
        for p, mode in modes.items():
            p.chmod(mode)


@pytest.fixture
def read_only() -> Callable[[Path], AbstractContextManager[None]]:
    """``with read_only(folder):`` the folder behaves as on a read-only mount (see :func:`_read_only`)."""
    return lambda folder: _read_only(Path(folder))
