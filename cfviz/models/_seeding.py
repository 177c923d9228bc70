"""Seeded construction of random-weight models without touching the caller's random state."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


def check_seed(seed: object) -> int:
    """Return ``seed`` if it is a non-negative int, else raise one clear error."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return seed


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator inside the block and restore the previous state after it.

    Weight initialisers in torch, diffusers and transformers draw from the global generator, so
    forking it is the only way to seed them; models are built on the CPU (then moved), which is
    why only the CPU state is forked.

    >>> import torch
    >>> before = torch.random.get_rng_state()
    >>> with seeded(3):
    ...     a = torch.rand(2)
    >>> with seeded(3):
    ...     b = torch.rand(2)
    >>> bool(torch.equal(a, b)), bool(torch.equal(before, torch.random.get_rng_state()))
    (True, True)
    """
    import torch

    check_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
