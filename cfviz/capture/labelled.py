"""A small labelled tensor: named dimensions with coordinate labels (a tiny xarray for maps).

Captured maps have several meaningful axes — step (with its timestep), layer or block, batch row,
token, height, width — and notebooks slice them by label, not by position. ``LabelledMaps`` keeps
the labels next to the data so that ``maps.sel(token="damage", timestep=261).mean("layer")`` says
what it does; :meth:`LabelledMaps.to_xarray` hands them to xarray itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

SPATIAL = ("h", "w")


@dataclass(frozen=True)
class LabelledMaps:
    """A tensor with named dimensions.

    Attributes
    ----------
    data:
        ``torch.Tensor`` whose last two dimensions are ``h`` and ``w``.
    dims:
        Dimension names, e.g. ``("step", "layer", "batch", "token", "h", "w")``.
    coords:
        For each non-spatial dimension, the label of each index (steps are ints, layers and tokens
        are strings).
    aux:
        Extra coordinates attached to a dimension: ``{"timestep": ("step", [981, 761, ...])}``.

    Example
    -------
    >>> import torch
    >>> m = LabelledMaps(torch.ones(2, 3, 4, 4), ("step", "token", "h", "w"),
    ...                  {"step": [0, 1], "token": ["a", "b", "c"]}, {"timestep": ("step", [900, 500])})
    >>> m.sel(timestep=500, token=["a", "c"]).dims
    ('token', 'h', 'w')
    >>> tuple(m.mean("step").data.shape)
    (3, 4, 4)
    """

    data: Any
    dims: tuple[str, ...]
    coords: dict[str, list[Any]]
    aux: dict[str, tuple[str, list[Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.dims) != self.data.ndim:
            raise ValueError(f"dims {self.dims} do not match a tensor of shape {tuple(self.data.shape)}")
        for d, labels in self.coords.items():
            if d not in self.dims:
                raise ValueError(f"coordinate {d!r} names no dimension of {self.dims}")
            if len(labels) != self.data.shape[self.dims.index(d)]:
                raise ValueError(f"coordinate {d!r} has {len(labels)} labels for size "
                                 f"{self.data.shape[self.dims.index(d)]}")

    # ------------------------------------------------------------------ basics
    @property
    def shape(self) -> dict[str, int]:
        """Sizes by dimension name."""
        return dict(zip(self.dims, self.data.shape))

    def __repr__(self) -> str:
        sizes = ", ".join(f"{d}: {n}" for d, n in self.shape.items())
        return f"LabelledMaps({sizes}; dtype={self.data.dtype})"

    def numpy(self) -> Any:
        """The data as a float32 NumPy array."""
        return self.data.detach().float().cpu().numpy()

    def to_xarray(self) -> Any:
        """The maps as a float32 ``xarray.DataArray`` with the same dims and coords (``pip install xarray``).

        >>> import torch
        >>> m = LabelledMaps(torch.ones(2, 3, 3), ("step", "h", "w"), {"step": [0, 1]},
        ...                  {"timestep": ("step", [900, 500])})
        >>> m.to_xarray().swap_dims(step="timestep").sel(timestep=500).dims
        ('h', 'w')
        """
        xarray = import_xarray("LabelledMaps.to_xarray")
        coords = {**self.coords, **{name: (d, list(v)) for name, (d, v) in self.aux.items()}}
        return xarray.DataArray(self.numpy(), dims=self.dims, coords=coords)

    def _axis(self, dim: str) -> int:
        if dim not in self.dims:
            raise KeyError(f"no dimension {dim!r}; dimensions are {self.dims}")
        return self.dims.index(dim)

    def _replace(self, data: Any, dims: Sequence[str], coords: dict[str, list[Any]],
                 aux: dict[str, tuple[str, list[Any]]] | None = None) -> LabelledMaps:
        aux = self.aux if aux is None else aux
        aux = {k: v for k, v in aux.items() if v[0] in dims}
        return LabelledMaps(data, tuple(dims), coords, aux)

    # ------------------------------------------------------------------ selection
    def isel(self, **indexers: int | Sequence[int]) -> LabelledMaps:
        """Select by position. An int drops the dimension; a list keeps it."""
        import torch

        data, dims = self.data, list(self.dims)
        coords = {k: list(v) for k, v in self.coords.items()}
        aux = {k: (d, list(v)) for k, (d, v) in self.aux.items()}
        for dim, idx in indexers.items():
            axis = dims.index(dim) if dim in dims else self._axis(dim)
            if isinstance(idx, int):
                data = data.select(axis, idx)
                dims.pop(axis)
                coords.pop(dim, None)
            else:
                idx = list(idx)
                data = data.index_select(axis, torch.as_tensor(idx, dtype=torch.long, device=data.device))
                if dim in coords:
                    coords[dim] = [coords[dim][i] for i in idx]
                for name, (d, vals) in list(aux.items()):
                    if d == dim:
                        aux[name] = (d, [vals[i] for i in idx])
        return self._replace(data, dims, coords, aux)

    def sel(self, **labels: Any) -> LabelledMaps:
        """Select by label (``token="damage"``, ``layer=[...]``, ``timestep=261``).

        A single label drops the dimension; a list keeps it. Auxiliary coordinates such as
        ``timestep`` select along the dimension they are attached to.
        """
        indexers: dict[str, int | list[int]] = {}
        for name, want in labels.items():
            if name in self.aux:
                dim, values = self.aux[name]
            elif name in self.coords:
                dim, values = name, self.coords[name]
            else:
                raise KeyError(f"no coordinate {name!r}; coordinates are "
                               f"{sorted(set(self.coords) | set(self.aux))}")
            def find(v: Any, values: list[Any] = values, name: str = name) -> int:
                matches = [i for i, x in enumerate(values) if x == v]
                if not matches:
                    raise KeyError(f"{name}={v!r} not found; available: {values}")
                return matches[0]
            if isinstance(want, (list, tuple)):
                indexers[dim] = [find(v) for v in want]
            else:
                indexers[dim] = find(want)
        return self.isel(**indexers)

    # ------------------------------------------------------------------ reductions
    def _reduce(self, op: str, dims: str | Iterable[str]) -> LabelledMaps:
        names = [dims] if isinstance(dims, str) else list(dims)
        axes = sorted(self._axis(d) for d in names)
        data = self.data.float()
        if op == "mean":
            data = data.mean(dim=axes)
        elif op == "sum":
            data = data.sum(dim=axes)
        elif op == "max":
            for ax in reversed(axes):
                data = data.amax(dim=ax)
        else:  # pragma: no cover - internal
            raise ValueError(op)
        keep = [d for d in self.dims if d not in names]
        coords = {k: v for k, v in self.coords.items() if k in keep}
        return self._replace(data, keep, coords)

    def mean(self, dims: str | Iterable[str]) -> LabelledMaps:
        """Mean over one or more dimensions (computed in float32)."""
        return self._reduce("mean", dims)

    def sum(self, dims: str | Iterable[str]) -> LabelledMaps:
        """Sum over one or more dimensions (computed in float32)."""
        return self._reduce("sum", dims)

    def max(self, dims: str | Iterable[str]) -> LabelledMaps:
        """Maximum over one or more dimensions."""
        return self._reduce("max", dims)

    # ------------------------------------------------------------------ geometry
    def resample(self, size: int | tuple[int, int], mode: str = "bilinear") -> LabelledMaps:
        """Resize the spatial dimensions to ``size`` (float32 result; see :func:`resize_maps`)."""
        if self.dims[-2:] != SPATIAL:
            raise ValueError(f"resample needs the last two dimensions to be ('h', 'w'), got {self.dims}")
        return self._replace(resize_maps(self.data, size, mode), self.dims, dict(self.coords))

    def transpose(self, *dims: str) -> LabelledMaps:
        """Reorder the dimensions."""
        if sorted(dims) != sorted(self.dims):
            raise ValueError(f"transpose needs a permutation of {self.dims}, got {dims}")
        perm = [self.dims.index(d) for d in dims]
        return self._replace(self.data.permute(*perm), dims, dict(self.coords))


def import_xarray(what: str) -> Any:
    """The xarray module, or an ImportError saying that ``what`` needs it and how to install it."""
    try:
        import xarray
    except ImportError:
        raise ImportError(f"{what} needs the xarray package: pip install xarray") from None
    return xarray


def resize_maps(t: Any, size: int | tuple[int, int], mode: str = "bilinear") -> Any:
    """Resize the last two dimensions of ``t`` to ``size`` in float32.

    Bicubic overshoot is clamped at zero, since attention probabilities are non-negative.
    """
    import torch.nn.functional as F

    h, w = (size, size) if isinstance(size, int) else size
    if tuple(t.shape[-2:]) == (h, w):
        return t.float()
    lead = t.shape[:-2]
    flat = t.float().reshape(-1, 1, *t.shape[-2:])
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    out = F.interpolate(flat, size=(h, w), mode=mode, **kwargs)
    if mode == "bicubic":
        out = out.clamp_min(0)
    return out.reshape(*lead, h, w)
