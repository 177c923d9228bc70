"""Prepare the next items on a background thread while the caller works on the current one.

:class:`Prefetcher` runs ``prepare(item)`` for each item of a sequence, in order, on one
background thread, at most ``depth`` results ahead of the consumer; the consumer iterates over
the results as it would over ``map(prepare, items)``. The extraction uses it to load and
preprocess batch k+1 (PNG decode, resizing) while the models run on batch k.

Guarantees:

* **Same results, same order.** One thread calls ``prepare`` on the items one after another, so
  the results are those of ``map(prepare, items)`` (no reordering, no concurrent calls).
* **Same errors, at the same place.** An exception raised by ``prepare(item)`` is re-raised to
  the consumer (the very exception object: type, message and arguments unchanged) when it asks
  for that item's result, not earlier; every result before it is delivered first.
* **Stops with its consumer.** Leaving the ``with`` block (normally, on an error, on
  ``KeyboardInterrupt``) or :meth:`Prefetcher.close` stops the thread: it prepares nothing new
  and is joined (a ``prepare`` call already running is let finish).
* ``depth=0`` prepares each item on the calling thread when asked (no thread): the plain form.

Threads suit this work: image decoding (Pillow), numpy and torch release the GIL, and nothing
has to be pickled (a DataLoader's worker processes would copy the data set object).

Example
-------
>>> with Prefetcher(lambda x: x * x, [1, 2, 3]) as squares:
...     list(squares)
[1, 4, 9]
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from cfviz.errors import CfvizError

T = TypeVar("T")
R = TypeVar("R")

#: How often a blocked producer or consumer looks at the stop flag and the other side (seconds).
_POLL = 0.1


class _Failure:
    """``prepare`` raised: carries the exception to the consumer."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


class Prefetcher(Generic[T, R]):
    """Iterate over ``prepare(item)`` for ``items``, computed ``depth`` ahead on a background thread.

    Parameters
    ----------
    prepare:
        Called once per item, in order, on the background thread (on the caller's with ``depth=0``).
    items:
        What to prepare (consumed by the background thread).
    depth:
        Results kept ready ahead of the consumer (the thread may work on one more meanwhile);
        ``0``: no thread, each result is computed when asked for.
    name:
        Name of the thread (shown in tracebacks and profilers).
    """

    def __init__(self, prepare: Callable[[T], R], items: Iterable[T], *, depth: int = 1,
                 name: str = "cfviz-prefetch") -> None:
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise CfvizError(f"prefetch depth must be an int >= 0 (0: no background thread), got {depth!r}")
        self._prepare = prepare
        self._items = iter(items)
        self.depth = depth
        self._stop = threading.Event()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(depth, 1))
        self._done = False
        self._thread: threading.Thread | None = None
        if depth:
            self._thread = threading.Thread(target=self._run, name=name, daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ producer (background thread)
    def _run(self) -> None:
        try:
            for item in self._items:
                if self._stop.is_set() or not self._put(self._prepare(item)):
                    return
        except BaseException as exc:  # noqa: BLE001 - every failure goes to the consumer, as raised
            self._put(_Failure(exc))
            return
        self._put(_END)

    def _put(self, value: Any) -> bool:
        """Queue ``value``, waiting for room; False once the consumer has stopped us."""
        while not self._stop.is_set():
            try:
                self._queue.put(value, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    # ------------------------------------------------------------------ consumer
    def __iter__(self) -> Iterator[R]:
        return self

    def __next__(self) -> R:
        if self._done:
            raise StopIteration
        if self._thread is None:  # depth 0: prepare here, now
            try:
                item = next(self._items)
            except StopIteration:
                self._done = True
                raise
            return self._prepare(item)
        value = self._get()
        if value is _END:
            self.close()
            raise StopIteration
        if isinstance(value, _Failure):
            self.close()
            raise value.exc
        return value

    def _get(self) -> Any:
        assert self._thread is not None
        while True:
            try:
                return self._queue.get(timeout=_POLL)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    # the thread always queues a result, a failure or the end before it returns
                    # (unless stopped): not finding one means it was stopped or killed
                    self._done = True
                    raise CfvizError("the prefetch thread stopped without a result (it was closed, or "
                                     "the interpreter is shutting down)") from None

    def close(self) -> None:
        """Stop the background thread and wait for it (a ``prepare`` call running is let finish)."""
        self._done = True
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:  # make room, in case the producer waits on a full queue
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
                self._thread.join(timeout=_POLL)
        while not self._queue.empty():  # drop prepared results: nothing holds on to them
            self._queue.get_nowait()

    @property
    def alive(self) -> bool:
        """Whether the background thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Prefetcher[T, R]:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
