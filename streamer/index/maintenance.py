"""A daemon thread that runs an index's maintenance (folds, rebuilds) in the background.

The thread knows nothing about graphs: it repeatedly calls ``owner._maintain_once(self)``
(one bounded unit of work, returning whether it did any) until there is nothing left,
then sleeps until :meth:`Maintainer.wake`. It also carries the "tickets" that let a
caller wait for a full drain of the delta buffer (:meth:`request_drain`), a rebuild
(:meth:`request_rebuild`) or an idle moment (:meth:`wait_idle`), which is how tests and
shutdown code stay deterministic.

The thread holds only a weak reference to its owner, so an index that is dropped
without :meth:`stop` is still garbage-collected (a finaliser stops the thread).
If a unit of work raises, the error is logged and kept, the thread ends and the owner
falls back to doing its maintenance synchronously (see ``HnswIndex``); waiters are
woken and :meth:`wait_idle` raises :class:`~streamer.errors.StateError`.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any

from streamer.errors import StateError

log = logging.getLogger(__name__)

_POLL_S = 1.0
"""Wall seconds between unprompted checks for work (a safety net: writers call wake)."""

_YIELD_S = 0.001
"""Wall seconds slept between two units of work, so waiting readers/writers get the lock."""


class Stopped(Exception):  # control flow, not an error
    """Raised inside a unit of work when the thread is asked to stop (work is abandoned)."""


class Maintainer:
    """Run ``owner._maintain_once(maintainer) -> bool`` in a daemon thread.

    Parameters
    ----------
    owner
        The index; must define ``_maintain_once(maintainer) -> bool`` (True if it did
        some work, so it is called again at once; False when there is nothing to do).
    name
        Thread name (shows up in logs and stack dumps).

    Attributes
    ----------
    error
        The exception that ended the thread, or None.

    Notes
    -----
    Sequence numbers (``seq``) are the owner's upsert counters: a drain to ``seq``
    means "every vector written by an upsert numbered ``<= seq`` has been folded".
    """

    def __init__(self, owner: Any, name: str) -> None:
        self._owner = weakref.ref(owner)
        self._cv = threading.Condition()
        self._stopping = False
        self._wake = False
        self._idle = False
        self.error: BaseException | None = None
        self.drain_target = -1
        self.drained = -1
        self._rebuild_requested = 0
        self._rebuild_done = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        weakref.finalize(owner, self._signal_stop)

    # ------------------------------------------------------------------ state

    @property
    def active(self) -> bool:
        """Whether the thread is running and accepting work (not stopping, not failed)."""
        return not self._stopping and self.error is None and self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called (units of work should raise :class:`Stopped`)."""
        return self._stopping

    def check_stop(self) -> None:
        """Raise :class:`Stopped` if the thread is being stopped."""
        if self._stopping:
            raise Stopped

    def wake(self) -> None:
        """Tell the thread there may be work (cheap; call after every relevant write)."""
        with self._cv:
            self._wake = True
            self._idle = False
            self._cv.notify_all()

    # ------------------------------------------------------------------ tickets

    def request_drain(self, seq: int, timeout: float | None = None) -> bool:
        """Ask for every vector written up to ``seq`` to be folded; wait for it.

        Returns
        -------
        bool
            True once done; False if the thread stopped or failed first (the caller
            should then do the work itself) or ``timeout`` (wall seconds) ran out.
        """
        with self._cv:
            self.drain_target = max(self.drain_target, seq)
            self._wake = True
            self._idle = False
            self._cv.notify_all()
            return self._cv.wait_for(lambda: self.drained >= seq or not self.active, timeout) \
                and self.drained >= seq

    def mark_drained(self, seq: int) -> None:
        """Record that the drain up to ``seq`` is complete and wake the waiters."""
        with self._cv:
            self.drained = max(self.drained, seq)
            self._cv.notify_all()

    def request_rebuild(self, timeout: float | None = None) -> bool:
        """Ask for a rebuild that starts after this call; wait until one has finished.

        Returns
        -------
        bool
            As :meth:`request_drain`.
        """
        with self._cv:
            self._rebuild_requested += 1
            ticket = self._rebuild_requested
            self._wake = True
            self._idle = False
            self._cv.notify_all()
            return self._cv.wait_for(
                lambda: self._rebuild_done >= ticket or not self.active, timeout
            ) and self._rebuild_done >= ticket

    def rebuild_ticket(self) -> int:
        """Return the newest rebuild request number (read when a rebuild starts)."""
        with self._cv:
            return self._rebuild_requested

    def rebuild_requested(self) -> bool:
        """Whether a requested rebuild has not started yet."""
        with self._cv:
            return self._rebuild_requested > self._rebuild_done

    def mark_rebuilt(self, ticket: int) -> None:
        """Record that a rebuild which started at request number ``ticket`` finished."""
        with self._cv:
            self._rebuild_done = max(self._rebuild_done, ticket)
            self._cv.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until the thread finds nothing to do (or has stopped).

        Parameters
        ----------
        timeout
            Wall seconds to wait at most; None waits for ever.

        Returns
        -------
        bool
            True when idle (or stopped cleanly), False on timeout.

        Raises
        ------
        StateError
            The thread died on an error (the message names it).
        """
        with self._cv:
            done = self._cv.wait_for(
                lambda: self._idle or self.error is not None or not self._thread.is_alive(),
                timeout,
            )
            if self.error is not None:
                msg = (f"index maintenance thread {self._thread.name!r} failed with "
                       f"{self.error!r}; the index now maintains itself synchronously")
                raise StateError(msg)
            return done

    # ------------------------------------------------------------------ lifecycle

    def _signal_stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread (abandoning a rebuild in progress) and join it. Idempotent."""
        self._signal_stop()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cv:
                if not self._wake and not self._stopping:
                    self._idle = True
                    self._cv.notify_all()
                    self._cv.wait_for(lambda: self._wake or self._stopping, _POLL_S)
                if self._stopping:
                    self._idle = True
                    self._cv.notify_all()
                    return
                self._wake = False
                self._idle = False
            owner = self._owner()
            if owner is None:
                return
            try:
                while not self._stopping and owner._maintain_once(self):
                    time.sleep(_YIELD_S)
            except Stopped:
                pass
            except BaseException as exc:  # reported through wait_idle and the log
                log.exception("index maintenance thread %r failed", self._thread.name)
                with self._cv:
                    self.error = exc
                    self._cv.notify_all()
                return
            finally:
                del owner
