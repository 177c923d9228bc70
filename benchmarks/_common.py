"""Shared helpers for the benchmarks: timing, peak-memory sampling, machine description, results files."""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


class PeakRSS:
    """Sample this process's resident memory every few milliseconds while the block runs."""

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        self._proc = psutil.Process(os.getpid())
        self._interval = interval
        self.peak = 0
        self.start = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self._interval)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def extra(self) -> int:
        """Peak minus the resident memory at entry, in bytes."""
        return self.peak - self.start


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def timed_cpu(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall seconds, CPU seconds of this process (all threads), and the result of ``fn()``.

    CPU time is far less disturbed than wall time when other work shares the cores.
    """
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w0, time.process_time() - c0, out


def timed_thread(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall seconds, CPU seconds of *this thread*, and the result of ``fn()``.

    With one torch thread the whole forward runs on the calling thread, so its CPU time counts
    only the work of ``fn`` itself: time the scheduler gives to other processes on a loaded
    machine is not in it (cache and memory-bandwidth sharing still are).
    """
    w0, c0 = time.perf_counter(), time.thread_time()
    out = fn()
    return time.perf_counter() - w0, time.thread_time() - c0, out


def load_average() -> str:
    """The 1-minute load average (how busy the machine was), or "n/a"."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}; {os.cpu_count()} logical CPUs; torch {torch.__version__} "
            f"({torch.get_num_threads()} threads); Python {platform.python_version()}")


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def write_results(name: str, text: str) -> Path:
    from cfviz.utils.io import atomic_write_text

    RESULTS.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(RESULTS / name, text)


def mb(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


class PairedTimes:
    """Times of two callables run in interleaved pairs (see :func:`interleaved_pairs`).

    ``wall_a``/``cpu_a`` are the first callable's runs (the baseline), ``wall_b``/``cpu_b`` the
    second's, one entry per pair. Ratios are second / first.
    """

    def __init__(self) -> None:
        self.wall_a: list[float] = []
        self.cpu_a: list[float] = []
        self.wall_b: list[float] = []
        self.cpu_b: list[float] = []
        self.load_before = self.load_after = "n/a"

    def pair_ratios(self, wall: bool = False) -> list[float]:
        a, b = (self.wall_a, self.wall_b) if wall else (self.cpu_a, self.cpu_b)
        return [y / x for x, y in zip(a, b)]

    def ratio_best(self, wall: bool = False) -> float:
        """Best / best: other work on a shared machine only ever adds time, so the minimum is the
        least disturbed run of each."""
        a, b = (self.wall_a, self.wall_b) if wall else (self.cpu_a, self.cpu_b)
        return min(b) / min(a)

    def ratio_median(self, wall: bool = False) -> float:
        """The median of the per-pair ratios (each pair ran close in time, under similar load)."""
        return statistics.median(self.pair_ratios(wall))


def interleaved_pairs(a: Callable[[], Any], b: Callable[[], Any], repeats: int,
                      label: str = "") -> PairedTimes:
    """Run ``a`` and ``b`` ``repeats`` times each in pairs, the order alternating (ab, ba, ab, ...).

    Each run is timed with :func:`timed_thread` (wall and this thread's CPU seconds), so drift in
    the machine's load hits both alike; the 1-minute load average is kept from before and after.
    One line per pair is printed (prefixed by ``label``).
    """
    times = PairedTimes()
    times.load_before = load_average()
    for i in range(repeats):
        order = (("a", a), ("b", b))
        for name, fn in (order if i % 2 == 0 else order[::-1]):
            wall, cpu, _ = timed_thread(fn)
            getattr(times, f"wall_{name}").append(wall)
            getattr(times, f"cpu_{name}").append(cpu)
        print(f"{label}pair {i + 1}/{repeats}: {times.cpu_a[-1]:.3f} s vs {times.cpu_b[-1]:.3f} s "
              f"(thread CPU), load {load_average()}", flush=True)
    times.load_after = load_average()
    return times
