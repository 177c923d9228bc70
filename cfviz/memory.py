"""Few-shot memory banks: exact nearest-neighbour cosine distance, chunked to bound memory.

Both branches use it: CLIP patch/window embeddings (WinCLIP+'s visual association score,
PatchCLIP's M_clip_V) and UNet feature maps (MapDiff's M_diff_V). The search is exact; chunking
over queries and over the bank keeps the similarity block at ``query_chunk x bank_chunk`` floats
whatever the bank size (thousands of reference patches are fine on a laptop).
"""

from __future__ import annotations

from typing import Any


class MemoryBank:
    """Exact cosine nearest-neighbour search over reference vectors.

    Parameters
    ----------
    features:
        ``(N, D)`` reference vectors (or ``(R, D, h, w)`` maps, see :meth:`from_maps`).
    query_chunk, bank_chunk:
        Rows of queries and of the bank compared at once; the similarity block is
        ``query_chunk x bank_chunk`` float32 values (default 4096 x 16384 = 256 MiB at most).
    device:
        Where the search runs (default: the features' device).

    Example
    -------
    >>> import torch
    >>> bank = MemoryBank(torch.eye(3))
    >>> bank.distance(torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])).round(decimals=4)
    tensor([0.0000, 0.2929])
    """

    def __init__(self, features: Any, *, query_chunk: int = 4096, bank_chunk: int = 16384, device: Any = None) -> None:
        import torch

        features = torch.as_tensor(features)
        if features.ndim != 2 or features.shape[0] == 0:
            raise ValueError(f"features must be a non-empty (N, D) matrix, got shape {tuple(features.shape)}")
        if not torch.isfinite(features).all():
            raise ValueError("features contain NaN or inf; check the encoder outputs")
        if query_chunk < 1 or bank_chunk < 1:
            raise ValueError("query_chunk and bank_chunk must be positive")
        dev = torch.device(device) if device is not None else features.device
        self.bank = torch.nn.functional.normalize(features.detach().to(dev, torch.float32), dim=1)
        self.query_chunk = int(query_chunk)
        self.bank_chunk = int(bank_chunk)

    @classmethod
    def from_maps(cls, maps: Any, **kwargs: Any) -> MemoryBank:
        """A bank of every location of ``(R, C, h, w)`` feature maps (``R*h*w`` vectors of size ``C``)."""
        import torch

        maps = torch.as_tensor(maps)
        if maps.ndim != 4:
            raise ValueError(f"maps must be (references, channels, h, w), got shape {tuple(maps.shape)}")
        return cls(maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1]), **kwargs)

    def __len__(self) -> int:
        return int(self.bank.shape[0])

    @property
    def dim(self) -> int:
        return int(self.bank.shape[1])

    def similarity(self, queries: Any) -> Any:
        """Highest cosine similarity of each query to the bank, ``(M,)``; exact, chunked."""
        import torch

        q = torch.as_tensor(queries)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must be (M, {self.dim}), got shape {tuple(q.shape)}")
        q = torch.nn.functional.normalize(q.detach().to(self.bank.device, torch.float32), dim=1)
        best = torch.empty(q.shape[0], device=q.device)
        for i in range(0, q.shape[0], self.query_chunk):
            qi = q[i:i + self.query_chunk]
            top = torch.full((qi.shape[0],), -2.0, device=q.device)
            for j in range(0, len(self), self.bank_chunk):
                top = torch.maximum(top, (qi @ self.bank[j:j + self.bank_chunk].T).amax(dim=1))
            best[i:i + qi.shape[0]] = top
        return best

    def distance(self, queries: Any) -> Any:
        """Cosine distance ``1 - max cos`` of each query to its nearest reference, ``(M,)``."""
        return 1.0 - self.similarity(queries)

    def distance_map(self, maps: Any) -> Any:
        """Nearest-neighbour distance of every location of ``(B, C, h, w)`` maps: ``(B, h, w)``."""
        import torch

        maps = torch.as_tensor(maps)
        if maps.ndim != 4:
            raise ValueError(f"maps must be (batch, channels, h, w), got shape {tuple(maps.shape)}")
        b, c, h, w = maps.shape
        return self.distance(maps.permute(0, 2, 3, 1).reshape(-1, c)).reshape(b, h, w)

    def __repr__(self) -> str:
        return f"MemoryBank({len(self)} vectors of dim {self.dim})"
