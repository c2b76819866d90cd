"""Virtual time for synchronous code: threads that take turns, exactly one running at a time.

The store is synchronous and waits in the middle of its methods (a DynamoDB call's latency,
its backoff between lost races), so each simulated container runs in a thread of its own. But
only one thread runs at any moment, and only until it waits: `sleep(seconds)` parks it on a
heap of wake-up times and hands the turn to whoever wakes first (ties in the order they went
to sleep). The interleaving, and so the whole run, follows from the program and its seeds,
never from the operating system's scheduler; and a wait costs virtual time, not wall time.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable


class Stopped(BaseException):
    """Raised where a parked thread waits, once the run is abandoned (another thread failed).
    A BaseException, so the store's `except Exception` cannot swallow it."""


class Turns:
    """The virtual clock and the threads that take turns on it (see the module docstring)."""

    def __init__(self) -> None:
        self.now = 0.0
        self._wakeups: list[tuple[float, int, threading.Semaphore]] = []
        self._order = itertools.count()
        self._handed_back = threading.Semaphore(0)
        self._mine = threading.local()
        self._threads: list[threading.Thread] = []
        self._failure: BaseException | None = None

    def monotonic(self) -> float:
        return self.now

    def spawn(self, name: str, body: Callable[[], None], *, at: float = 0.0) -> None:
        """A thread running `body` from virtual time `at`, when `run()` gives it its turn."""
        turn = threading.Semaphore(0)

        def main() -> None:
            self._mine.turn = turn
            turn.acquire()
            try:
                if self._failure is None:
                    body()
            except Stopped:
                pass
            except BaseException as exc:  # handed to run(), which re-raises it
                self._failure = self._failure or exc
            finally:
                self._handed_back.release()

        thread = threading.Thread(target=main, name=name, daemon=True)
        self._threads.append(thread)
        self._wake(at, turn)
        thread.start()

    def sleep(self, seconds: float) -> None:
        """Park the calling thread (one that `spawn` started) for `seconds` of virtual time."""
        turn: threading.Semaphore = self._mine.turn
        self._wake(self.now + max(seconds, 0.0), turn)
        self._handed_back.release()
        turn.acquire()
        if self._failure is not None:
            raise Stopped

    def run(self) -> None:
        """Hand out turns in wake-up order until every thread has ended; a thread's failure
        stops the others where they wait, then is raised here."""
        while self._wakeups:
            at, _, turn = heapq.heappop(self._wakeups)
            self.now = max(self.now, at)
            turn.release()
            self._handed_back.acquire()
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def _wake(self, at: float, turn: threading.Semaphore) -> None:
        heapq.heappush(self._wakeups, (at, next(self._order), turn))
