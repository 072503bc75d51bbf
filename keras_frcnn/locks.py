"""Exclusive file locks between processes: the kernel's ``flock``, released when the holder ends
(even by kill -9), so a crashed process never leaves a stale lock."""

from __future__ import annotations

import contextlib
import os


@contextlib.contextmanager
def file_lock(path, wait: bool = True):
    """Holds an exclusive lock on ``path`` (created if needed) and writes this process's id into it.

    Yields None once held; with ``wait=False`` and another process holding it, yields that
    process's id (as the file says) without holding the lock. No lock where there is no ``flock``
    (not POSIX) or ``path`` is a URL (a gs:// bucket): it yields None at once."""
    path = os.fspath(path)
    try:
        import fcntl
    except ImportError:
        fcntl = None
    if fcntl is None or "://" in path:
        yield None
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            lock.seek(0)
            yield lock.read().strip() or "?"
            return
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield None
