"""In-memory results of a capture: labelled per-step, per-layer attention maps and feature maps.

Shapes (``B`` = batch rows kept, ``K`` = selected tokens, ``H`` = heads, ``C`` = channels)::

    attention[layer][step]   (B, K, h, w)       heads="mean"  (float16 by default)
                             (B, H, K, h, w)    heads="all"
    features[block][step]    (B, C, h, w)

``h, w`` differ between layers (64, 32, 16, 8 for SD at 512 px). :meth:`CaptureCache.attention_maps`
stacks layers into one :class:`~cfviz.capture.labelled.LabelledMaps` with dimensions
``(step, layer, batch, [head,] token, h, w)``, resampling to one grid when asked.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from cfviz.capture.labelled import LabelledMaps, resize_maps
from cfviz.capture.naming import NamesFilter, block_of, select_names
from cfviz.capture.tokens import TokenSelection
from cfviz.errors import CaptureError


@dataclass(frozen=True)
class StepInfo:
    """One denoiser call (UNet or transformer) inside a capture.

    Attributes
    ----------
    step:
        Index of the UNet call within the capture (0, 1, ...), not a count of layer calls.
    timestep:
        The ``timestep`` argument of that call (a list when kept rows had different values); as
        on the 0..1000 scale for every family: SD3 passes ``sigma * 1000``; FLUX's ``sigma`` is
        recorded times 1000.
    rows:
        Batch rows of the call that were kept.
    batch_size:
        Rows in the call.
    sample_size:
        Spatial size ``(h, w)`` of the denoiser input (FLUX: the token grid of its packed latents).
    """

    step: int
    timestep: float | list[float] | None
    rows: tuple[int, ...]
    batch_size: int
    sample_size: tuple[int, int]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["rows"], d["sample_size"] = list(self.rows), list(self.sample_size)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StepInfo:
        return cls(step=int(d["step"]), timestep=d["timestep"], rows=tuple(d["rows"]),
                   batch_size=int(d["batch_size"]), sample_size=tuple(d["sample_size"]))  # type: ignore[arg-type]


@dataclass
class CaptureCache:
    """Recorded maps with their labels. See the module docstring for shapes.

    Example
    -------
    >>> cache = cap.cache  # doctest: +SKIP
    >>> cache.timesteps  # doctest: +SKIP
    [981.0, 801.0]
    >>> cache.attention_maps(tokens=["damage"], size=64).mean(["layer", "step"])  # doctest: +SKIP
    LabelledMaps(batch: 1, token: 1, h: 64, w: 64; dtype=torch.float32)
    """

    layers: list[str]
    blocks: list[str]
    tokens: TokenSelection | None
    heads: str
    settings: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    steps: list[StepInfo] = field(default_factory=list)
    attention: dict[str, dict[int, Any]] = field(default_factory=dict)
    features: dict[str, dict[int, Any]] = field(default_factory=dict)
    reduced_steps: list[StepInfo] | None = None
    #: the denoiser's configured image size in px (SD UNets; for ``aggregate(method="daam")``)
    model_size: int | None = None
    #: heads of each recorded layer (for ``aggregate(method="daam")`` of a ``heads="mean"`` capture)
    layer_heads: dict[str, int] = field(default_factory=dict)
    _counts: dict[tuple[str, str], int] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ recording (internal)
    def _add(self, kind: str, name: str, step: int, t: Any, reduce: str | None) -> None:
        """Record ``t`` for layer (``kind="attn"``) or block (``"feat"``) ``name`` at ``step``."""
        per = (self.attention if kind == "attn" else self.features).setdefault(name, {})
        if reduce == "mean":
            if 0 in per:
                if per[0].shape != t.shape:
                    raise CaptureError(f"{name}: maps of shape {tuple(t.shape)} cannot join a running mean "
                                       f"of shape {tuple(per[0].shape)} (batch or size changed between steps)")
                per[0] += t
            else:
                per[0] = t.clone()
            self._counts[(kind, name)] = self._counts.get((kind, name), 0) + 1
        else:
            if step in per:  # a layer called twice in one UNet call (e.g. weight sharing): average
                n = self._counts.get((kind, f"{name}@{step}"), 1)
                per[step] = ((per[step].float() * n + t.float()) / (n + 1)).to(t.dtype)
                self._counts[(kind, f"{name}@{step}")] = n + 1
            else:
                per[step] = t

    def _finalize(self, reduce: str | None) -> None:
        """Turn running sums into means (``reduce_steps="mean"``)."""
        if reduce != "mean" or self.reduced_steps is not None:
            return
        import torch

        dtype = getattr(torch, self.settings.get("dtype", "float16"))
        for kind, table in (("attn", self.attention), ("feat", self.features)):
            for name, per in table.items():
                if 0 in per:
                    per[0] = (per[0] / self._counts[(kind, name)]).to(dtype)
        self.reduced_steps = list(self.steps)
        if self.steps:
            first = self.steps[0]
            self.steps = [StepInfo(step=0, timestep=None, rows=first.rows, batch_size=first.batch_size,
                                   sample_size=first.sample_size)]

    # ------------------------------------------------------------------ labels
    @property
    def timesteps(self) -> list[Any]:
        """Timestep of each step (``None`` for a cache reduced over steps)."""
        return [s.timestep for s in self.steps]

    @property
    def labels(self) -> list[str]:
        """Token labels, one per token map."""
        if self.tokens is not None:
            return list(self.tokens.labels)
        k = self._token_axis_size()
        return [f"#{i}" for i in range(k)]

    def _token_axis_size(self) -> int:
        for per in self.attention.values():
            for t in per.values():
                return int(t.shape[-3])
        return 0

    @property
    def batch_size(self) -> int:
        """Rows kept per step."""
        for table in (self.attention, self.features):
            for per in table.values():
                for t in per.values():
                    return int(t.shape[0])
        return 0

    def resolution(self, layer: str) -> tuple[int, int]:
        """Spatial size ``(h, w)`` of a layer's (or block's) maps."""
        table = self.attention if layer in self.attention else self.features
        if layer not in table or not table[layer]:
            raise KeyError(f"no records for {layer!r}")
        t = next(iter(table[layer].values()))
        return int(t.shape[-2]), int(t.shape[-1])

    @property
    def nbytes(self) -> int:
        """Bytes held by all records."""
        return sum(int(t.numel() * t.element_size()) for table in (self.attention, self.features)
                   for per in table.values() for t in per.values())

    def __repr__(self) -> str:
        res = sorted({self.resolution(n) for n in self.attention if self.attention[n]}, reverse=True)
        labels = self.labels if self.attention else []
        shown = labels if len(labels) <= 8 else [*labels[:4], "...", *labels[-2:]]
        return (f"CaptureCache(steps={len(self.steps)}, layers={len(self.attention)}, "
                f"blocks={len(self.features)}, tokens={shown}, "
                f"resolutions={res}, {self.nbytes / 1e6:.2f} MB)")

    # ------------------------------------------------------------------ queries
    def _steps(self, steps: int | Sequence[int] | None) -> list[int]:
        all_steps = [s.step for s in self.steps]
        if steps is None:
            return all_steps
        chosen = [steps] if isinstance(steps, int) else list(steps)
        missing = [s for s in chosen if s not in all_steps]
        if missing:
            raise KeyError(f"steps {missing} not recorded; recorded steps are {all_steps}")
        return chosen

    def step_at(self, timestep: float) -> int:
        """The step whose timestep equals ``timestep``."""
        for s in self.steps:
            if s.timestep == timestep:
                return s.step
        raise KeyError(f"no step with timestep {timestep}; timesteps are {self.timesteps}")

    def _token_index(self, tokens: str | int | Sequence[str | int] | None) -> list[int] | None:
        if tokens is None:
            return None
        labels = self.labels
        want = [tokens] if isinstance(tokens, (str, int)) else list(tokens)
        out = []
        for t in want:
            if isinstance(t, int):
                if not 0 <= t < len(labels):
                    raise KeyError(f"token index {t} out of range for {len(labels)} recorded tokens")
                out.append(t)
            elif t in labels:
                out.append(labels.index(t))
            else:
                raise KeyError(f"token {t!r} was not recorded; recorded tokens are {labels}")
        return out

    def attention_maps(self, layers: NamesFilter = None, *, steps: int | Sequence[int] | None = None,
                       tokens: str | int | Sequence[str | int] | None = None,
                       size: int | tuple[int, int] | None = None, mode: str = "bilinear") -> LabelledMaps:
        """Stack attention maps into ``(step, layer, batch, [head,] token, h, w)``.

        Parameters
        ----------
        layers:
            Filter over recorded layer names (default: all), e.g. ``"up_blocks.1*"``.
        steps, tokens:
            Subsets by step index and by token label (or position in :attr:`labels`).
        size:
            Resample every layer to this grid. Needed when the chosen layers differ in resolution.
        mode:
            Interpolation mode for resampling (``"bilinear"``, ``"bicubic"``, ``"nearest"``).
        """
        return self._attention_maps(layers, steps, tokens, size, mode, head_mean=False)

    def head_counts(self, layers: NamesFilter = None) -> dict[str, int]:
        """Heads recorded per layer (``heads="all"``); layers of a UNet differ (SD2: 5, 10, 20)."""
        if self.heads != "all":
            raise CaptureError("head counts are known only for a capture made with heads='all'")
        names = select_names(self.attention, layers, what="recorded layer", argument="layers")
        return {n: int(next(iter(self.attention[n].values())).shape[-4]) for n in names if self.attention[n]}

    def _mixed_heads(self, layers: NamesFilter) -> bool:
        return self.heads == "all" and len(set(self.head_counts(layers).values())) > 1

    def _attention_maps(self, layers: NamesFilter, steps: Any, tokens: Any, size: Any, mode: str,
                        head_mean: bool) -> LabelledMaps:
        """:meth:`attention_maps`; ``head_mean`` averages each layer's heads before the layers are stacked."""
        import torch

        names = select_names(self.attention, layers, what="recorded layer", argument="layers")
        step_ids = self._steps(steps)
        tok = self._token_index(tokens)
        all_heads = self.heads == "all" and not head_mean
        if all_heads and self._mixed_heads(names):
            counts = self.head_counts(names)
            raise CaptureError(
                f"the chosen layers have different head counts ({sorted(set(counts.values()))} heads), so their "
                "heads cannot be stacked: choose layers with one head count (layers=...), or average heads "
                "per layer with cache.aggregate(over=('head', ...)) or cache.blocks_average()")
        stacked = []
        for name in names:
            per = self.attention[name]
            missing = [s for s in step_ids if s not in per]
            if missing:
                raise CaptureError(f"layer {name} has no record for steps {missing}")
            t = torch.stack([per[s] for s in step_ids])  # (S, B, [H,] K, h, w)
            if tok is not None:
                t = t.index_select(-3, torch.as_tensor(tok, device=t.device))
            if head_mean and self.heads == "all":  # float32 mean of this layer's heads
                t = t.float().mean(dim=2).to(t.dtype)
            stacked.append(t)
        shapes = {tuple(t.shape[-2:]) for t in stacked}
        if size is None and len(shapes) > 1:
            raise CaptureError(f"layers have different resolutions {sorted(shapes, reverse=True)}: pass size=... "
                               "to resample them to one grid (e.g. size=64), or choose layers of one resolution")
        if size is not None:
            stacked = [resize_maps(t, size, mode) for t in stacked]
        data = torch.stack(stacked, dim=1)
        dims = ("step", "layer", "batch") + (("head",) if all_heads else ()) + ("token", "h", "w")
        labels = self.labels if tok is None else [self.labels[i] for i in tok]
        coords: dict[str, list[Any]] = {"step": step_ids, "layer": names, "token": labels}
        by_step = {s.step: s.timestep for s in self.steps}
        return LabelledMaps(data, dims, coords, {"timestep": ("step", [by_step[s] for s in step_ids]),
                                                 "block": ("layer", [block_of(n) for n in names])})

    def aggregate(self, over: Iterable[str] = ("head", "layer", "step"), *, layers: NamesFilter = None,
                  steps: int | Sequence[int] | None = None, tokens: str | int | Sequence[str | int] | None = None,
                  size: int | tuple[int, int] | None = None, mode: str = "bilinear", method: str = "mean",
                  model_size: int | None = None) -> LabelledMaps:
        """Average attention maps over the named dimensions (those present), on one grid.

        Example: ``cache.aggregate(over=("layer", "step"), tokens="damage", size=64)`` gives one
        ``(batch, h, w)`` map per image... with a ``token`` dimension kept if several tokens are asked.
        With ``heads="all"`` and layers of different head counts (SD2: 5, 10, 20), ``"head"`` in
        ``over`` averages each layer's heads first (each layer weighs the same, as with
        ``heads="mean"``).

        ``method="daam"`` is DAAM 0.2's global heat map instead (:mod:`cfviz.capture.daam`): down
        and up blocks only, DAAM's resolution filter for a ``model_size`` px model (default: as
        recorded), steps summed, the mean over (layer, head) pairs of bicubic maps on DAAM's
        64x64 or 96x96 grid; ``over``, ``layers``, ``size`` and ``mode`` are DAAM's then.
        """
        if method == "daam":
            if layers is not None or size is not None or mode != "bilinear" or tuple(over) != ("head", "layer", "step"):
                raise CaptureError("aggregate(method='daam') chooses the layers, grid, interpolation and averaged "
                                   "dimensions as DAAM does: pass only steps, tokens and model_size with it")
            from cfviz.capture.daam import daam_aggregate

            return daam_aggregate(self, steps=steps, tokens=tokens, model_size=model_size)
        if method != "mean":
            raise CaptureError(f"aggregate method must be 'mean' (cfviz's) or 'daam' (DAAM 0.2's), got {method!r}")
        over = list(over)
        per_layer = "head" in over and self._mixed_heads(layers)
        maps = self._attention_maps(layers, steps, tokens, size, mode, head_mean=per_layer)
        dims = [d for d in over if d in maps.dims]
        return maps.mean(dims) if dims else maps

    def blocks_average(self, *, steps: int | Sequence[int] | None = None, tokens: Any = None,
                       size: int | tuple[int, int] | None = None) -> LabelledMaps:
        """Attention averaged over the layers of each UNet block: ``(step, block, batch, token, h, w)``."""
        import torch

        maps = self._attention_maps(None, steps, tokens, size, "bilinear", head_mean=self._mixed_heads(None))
        if maps.dims.count("head"):
            maps = maps.mean("head")
        blocks = maps.aux["block"][1]
        order = list(dict.fromkeys(blocks))
        parts = [maps.isel(layer=[i for i, b in enumerate(blocks) if b == blk]).mean("layer").data
                 for blk in order]
        data = torch.stack(parts, dim=1)
        dims = ("step", "block") + maps.dims[2:]
        coords = {"step": maps.coords["step"], "block": order, "token": maps.coords["token"]}
        return LabelledMaps(data, dims, coords, {"timestep": maps.aux["timestep"]})

    def feature_maps(self, block: str, *, steps: int | Sequence[int] | None = None) -> LabelledMaps:
        """Feature maps of one recorded module: ``(step, batch, channel, h, w)``."""
        import torch

        if block not in self.features:
            raise KeyError(f"no feature maps for {block!r}; recorded blocks are {list(self.features)}")
        step_ids = self._steps(steps)
        per = self.features[block]
        data = torch.stack([per[s] for s in step_ids])
        by_step = {s.step: s.timestep for s in self.steps}
        return LabelledMaps(data, ("step", "batch", "channel", "h", "w"), {"step": step_ids},
                            {"timestep": ("step", [by_step[s] for s in step_ids])})

    # ------------------------------------------------------------------ reshaping
    def select_rows(self, rows: int | Sequence[int]) -> CaptureCache:
        """A cache with only some batch rows (e.g. one image of a batch, for a store entry)."""
        import torch

        idx = [rows] if isinstance(rows, int) else list(rows)
        def take(t: Any) -> Any:
            return t.index_select(0, torch.as_tensor(idx, device=t.device))
        tokens = self.tokens
        if tokens is not None and len(tokens.prompts) > 1:
            tokens = TokenSelection(tokens.labels, tuple(tokens.prompts[i] for i in idx),
                                    tuple(tokens.token_ids[i] for i in idx),
                                    tuple(tokens.columns[i] for i in idx), tokens.sequence_length,
                                    tokens.streams)
        return CaptureCache(
            layers=list(self.layers), blocks=list(self.blocks), tokens=tokens, heads=self.heads,
            settings=dict(self.settings), metadata=dict(self.metadata), steps=list(self.steps),
            attention={n: {s: take(t) for s, t in per.items()} for n, per in self.attention.items()},
            features={n: {s: take(t) for s, t in per.items()} for n, per in self.features.items()},
            reduced_steps=self.reduced_steps, model_size=self.model_size, layer_heads=dict(self.layer_heads),
        )

    def to(self, device: Any) -> CaptureCache:
        """Move every record to ``device`` (in place) and return self."""
        for table in (self.attention, self.features):
            for per in table.values():
                for s in list(per):
                    per[s] = per[s].to(device)
        return self

