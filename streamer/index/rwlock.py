"""A readers-writer lock with writer preference, as two context managers.

hnswlib's ``add_items`` / ``resize_index`` / ``mark_deleted`` are not safe while a
``knn_query`` runs (hnswlib README, "thread-safety"), but concurrent queries are. The
index adaptors therefore take :meth:`RWLock.read` around queries and reads and
:meth:`RWLock.write` around every mutation.

The lock itself is ``readerwriterlock.rwlock.RWLockWrite`` (PyPI ``readerwriterlock``,
the "second readers-writers problem": writers are preferred, so a steady query load
cannot starve index updates). This module only wraps it in context managers so the
implementation can be swapped in one place.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from readerwriterlock import rwlock


class RWLock:
    """Many concurrent readers or one writer; a waiting writer blocks new readers.

    Notes
    -----
    Not reentrant: a thread holding :meth:`write` must not call :meth:`read` (or
    :meth:`write`) again, and a reader cannot upgrade to a writer. Callers keep
    lock-free ``_locked`` helpers for work done under a lock they already hold.

    Examples
    --------
    >>> lock = RWLock()
    >>> with lock.read():
    ...     pass
    >>> with lock.write():
    ...     pass
    """

    def __init__(self) -> None:
        self._lock = rwlock.RWLockWrite()

    @contextmanager
    def read(self) -> Iterator[None]:
        """Hold the lock shared for the ``with`` block."""
        with self._lock.gen_rlock():
            yield

    @contextmanager
    def write(self) -> Iterator[None]:
        """Hold the lock exclusively for the ``with`` block."""
        with self._lock.gen_wlock():
            yield
