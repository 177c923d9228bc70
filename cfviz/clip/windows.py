"""Sliding windows on the ViT patch grid: boxes, batched window embeddings, score aggregation.

WinCLIP encodes a window by *token selection*: it keeps the class token plus the window's
patch tokens (positional embeddings already added) and runs the image transformer on that short
sequence; the pooled, projected class token is the window embedding. This module does it for
all windows of all images at once, as a batch of short sequences chunked by ``chunk_size``
(never one forward pass per window), and it reads the token sequence by calling the visual
tower's pieces directly (``conv1``, ``class_embedding``, ``positional_embedding``, ``ln_pre``,
``transformer``, ``ln_post``, ``proj``), so no forward hook is installed and none can leak.

Geometry: a window is a box ``[row, col, height, width]`` in patch units; boxes of one scale
are listed row-major by their top-left corner, like ``torch.nn.functional.unfold`` (anomalib's
``make_masks``). On the 15x15 grid of ``ViT-B-16-plus-240``, stride 1 gives 196 windows at
scale 2 and 169 at scale 3. With a stride that does not tile the grid, the last rows/columns
are covered by no window; aggregation gives them 0 (as anomalib does).

Example
-------
>>> import torch
>>> from cfviz.models import tiny_clip
>>> enc = WindowEncoder(tiny_clip(seed=0), scales=(2, 3))
>>> emb = enc(torch.randn(1, 3, 240, 240, generator=torch.Generator().manual_seed(0)))
>>> emb.image.shape, emb.patches.shape, emb.windows[2].shape, emb.windows[3].shape
(torch.Size([1, 32]), torch.Size([1, 225, 32]), torch.Size([1, 196, 32]), torch.Size([1, 169, 32]))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cfviz.clip.token_order import run_transformer

#: Default number of short window sequences per transformer call. For ViT-B-16-plus-240 a 3x3
#: chunk of 1024 sequences holds ~1024*10*896*4 B = 37 MB per activation (the MLP's hidden
#: layer four times that), so a few hundred MB at most; smaller chunks trade speed for memory.
DEFAULT_CHUNK = 1024


# ---------------------------------------------------------------------------------------------
# geometry


def _grid(grid: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(grid, int):
        grid = (grid, grid)
    gh, gw = (int(g) for g in grid)
    if gh < 1 or gw < 1:
        raise ValueError(f"grid must be positive (rows, cols), got {tuple(grid)}")
    return gh, gw


def check_scale(grid: int | Sequence[int], scale: int, stride: int = 1) -> None:
    """Raise a clear ``ValueError`` when ``scale``/``stride`` do not fit the grid."""
    gh, gw = _grid(grid)
    if not isinstance(scale, int) or isinstance(scale, bool) or not 1 <= scale <= min(gh, gw):
        raise ValueError(f"window scale must be an integer in 1..{min(gh, gw)} (patches per side on a "
                         f"{gh}x{gw} grid), got {scale!r}")
    if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
        raise ValueError(f"window stride must be a positive integer (in patches), got {stride!r}")


def window_boxes(grid: int | Sequence[int], scale: int, stride: int = 1) -> Any:
    """Boxes ``(n, 4)`` int64 ``[row, col, height, width]`` of all ``scale x scale`` windows.

    >>> window_boxes(15, 2).shape, window_boxes(15, 3).shape
    (torch.Size([196, 4]), torch.Size([169, 4]))
    >>> window_boxes((3, 4), 2, stride=2).tolist()
    [[0, 0, 2, 2], [0, 2, 2, 2]]
    """
    import torch

    check_scale(grid, scale, stride)
    gh, gw = _grid(grid)
    rows = torch.arange(0, gh - scale + 1, stride)
    cols = torch.arange(0, gw - scale + 1, stride)
    r, c = torch.meshgrid(rows, cols, indexing="ij")
    size = torch.full((r.numel(),), scale)
    return torch.stack([r.reshape(-1), c.reshape(-1), size, size], dim=1)


def window_patch_indices(boxes: Any, grid: int | Sequence[int]) -> Any:
    """Flat patch indices ``(n, h*w)`` (row-major ``row * gw + col``) inside each box.

    All boxes must have the same size (one scale).

    >>> window_patch_indices(window_boxes(15, 2)[:2], 15).tolist()
    [[0, 1, 15, 16], [1, 2, 16, 17]]
    """
    import torch

    gh, gw = _grid(grid)
    boxes = torch.as_tensor(boxes, dtype=torch.long)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.shape[0] == 0:
        raise ValueError(f"boxes must be a non-empty (n, 4) [row, col, h, w] array, got {tuple(boxes.shape)}")
    h, w = int(boxes[0, 2]), int(boxes[0, 3])
    if not ((boxes[:, 2] == h) & (boxes[:, 3] == w)).all():
        raise ValueError("window_patch_indices needs boxes of one size (one scale); split them by scale")
    _check_boxes_inside(boxes, (gh, gw))
    dr, dc = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    rows = boxes[:, :1] + dr.reshape(1, -1)
    cols = boxes[:, 1:2] + dc.reshape(1, -1)
    return rows * gw + cols


def incidence_matrix(boxes: Any, grid: int | Sequence[int]) -> Any:
    """Window x patch incidence ``(n, gh*gw)`` float32: 1 where the patch lies in the window.

    >>> incidence_matrix(window_boxes(2, 1), 2)
    tensor([[1., 0., 0., 0.],
            [0., 1., 0., 0.],
            [0., 0., 1., 0.],
            [0., 0., 0., 1.]])
    """
    import torch

    gh, gw = _grid(grid)
    boxes = torch.as_tensor(boxes, dtype=torch.long)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be an (n, 4) [row, col, h, w] array, got {tuple(boxes.shape)}")
    _check_boxes_inside(boxes, (gh, gw))
    r, c = torch.arange(gh), torch.arange(gw)
    in_rows = (r >= boxes[:, :1]) & (r < boxes[:, :1] + boxes[:, 2:3])  # (n, gh)
    in_cols = (c >= boxes[:, 1:2]) & (c < boxes[:, 1:2] + boxes[:, 3:4])  # (n, gw)
    return (in_rows[:, :, None] & in_cols[:, None, :]).reshape(len(boxes), gh * gw).float()


def _check_boxes_inside(boxes: Any, grid: tuple[int, int]) -> None:
    gh, gw = grid
    if len(boxes) and ((boxes[:, :2] < 0).any() or (boxes[:, 2:] < 1).any()
                       or (boxes[:, 0] + boxes[:, 2] > gh).any() or (boxes[:, 1] + boxes[:, 3] > gw).any()):
        raise ValueError(f"boxes must lie inside the {gh}x{gw} grid with positive sizes")


# ---------------------------------------------------------------------------------------------
# aggregation of window scores onto the patch grid


def _scores_and_incidence(scores: Any, boxes: Any, grid: Any) -> tuple[Any, Any, tuple[int, int]]:
    import torch

    gh, gw = _grid(grid)
    scores = torch.as_tensor(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (batch, n_windows), got shape {tuple(scores.shape)}")
    inc = incidence_matrix(boxes, (gh, gw)).to(scores.device)
    if scores.shape[1] != inc.shape[0]:
        raise ValueError(f"{scores.shape[1]} window scores for {inc.shape[0]} boxes")
    return scores.float(), inc, (gh, gw)


def harmonic_aggregation(scores: Any, boxes: Any, grid: int | Sequence[int]) -> Any:
    """Per patch, the harmonic mean of the scores of the windows covering it: ``(B, gh, gw)``.

    ``M_ij = |{k : ij in w_k}| / sum_{k : ij in w_k} 1 / s_k``, computed for all patches at once
    with the window x patch incidence matrix. Patches covered by no window get 0; a zero score
    makes the harmonic mean 0 (its reciprocal is infinite), as in anomalib.

    >>> import torch
    >>> harmonic_aggregation(torch.tensor([[0.5, 0.25]]), torch.tensor([[0, 0, 1, 2], [0, 1, 1, 2]]), (1, 4))
    tensor([[[0.5000, 0.3333, 0.2500, 0.0000]]])
    """
    import torch

    scores, inc, (gh, gw) = _scores_and_incidence(scores, boxes, grid)
    count = inc.sum(dim=0)  # windows per patch
    inv = scores.reciprocal()
    infinite = inv.isinf()  # zero scores; in a matmul inf * 0 (non-covering windows) would be NaN
    inv = torch.where(infinite, torch.zeros_like(inv), inv)
    touched_by_zero = (infinite.float() @ inc) > 0  # the harmonic mean is 0 there
    out = count / (inv @ inc)
    out = torch.where((count > 0) & ~touched_by_zero, out, torch.zeros_like(out))  # uncovered: 0
    return out.reshape(-1, gh, gw)


def mean_aggregation(scores: Any, boxes: Any, grid: int | Sequence[int]) -> Any:
    """Per patch, the arithmetic mean of the covering windows' scores (0 where none): ``(B, gh, gw)``.

    >>> import torch
    >>> mean_aggregation(torch.tensor([[0.5, 0.25]]), torch.tensor([[0, 0, 1, 2], [0, 1, 1, 2]]), (1, 4))
    tensor([[[0.5000, 0.3750, 0.2500, 0.0000]]])
    """
    scores, inc, (gh, gw) = _scores_and_incidence(scores, boxes, grid)
    count = inc.sum(dim=0)
    return ((scores @ inc) / count.clamp_min(1)).reshape(-1, gh, gw)


AGGREGATIONS = {"harmonic": harmonic_aggregation, "mean": mean_aggregation}


def aggregate(scores: Any, boxes: Any, grid: int | Sequence[int], how: str = "harmonic") -> Any:
    """Window scores to a patch map with ``how`` = ``"harmonic"`` (WinCLIP) or ``"mean"``."""
    return AGGREGATIONS[check_choice(how, AGGREGATIONS, "aggregation")](scores, boxes, grid)


def check_choice(value: str, choices: Any, name: str) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------
# embeddings


@dataclass
class VisualEmbeddings:
    """Image, patch and window embeddings of a batch of images (float32).

    Attributes
    ----------
    image:
        ``(B, D)`` global embeddings, equal to ``model.encode_image(images)``.
    patches:
        ``(B, gh*gw, D)`` final patch tokens through ``ln_post`` and ``proj`` (the joint space,
        comparable with text).
    patch_tokens:
        ``(B, gh*gw, W)`` final patch tokens after ``ln_post``, not projected (what anomalib's
        WinCLIP+ puts in its patch memory).
    windows:
        ``scale -> (B, n_windows, D)`` window embeddings.
    boxes:
        ``scale -> (n_windows, 4)`` boxes ``[row, col, h, w]`` in patches.
    grid:
        ``(gh, gw)``.
    """

    image: Any
    patches: Any
    patch_tokens: Any
    windows: dict[int, Any] = field(default_factory=dict)
    boxes: dict[int, Any] = field(default_factory=dict)
    grid: tuple[int, int] = (0, 0)

    @property
    def batch_size(self) -> int:
        return int(self.image.shape[0])


class WindowEncoder:
    """Encode images into image, patch and window embeddings with an open_clip ViT.

    Parameters
    ----------
    bundle:
        A :class:`~cfviz.models.bundle.ClipBundle` whose image tower is an open_clip
        ``VisionTransformer`` with class-token or average pooling.
    scales:
        Window sides in patches (WinCLIP: ``(2, 3)``); ``()`` for patches and image only.
    stride:
        Window stride in patches (WinCLIP: 1).
    chunk_size:
        Window sequences per transformer call (bounds memory; does not change results).

    Example
    -------
    >>> import torch
    >>> from cfviz.models import tiny_clip
    >>> b = tiny_clip(seed=0)
    >>> x = torch.randn(2, 3, 240, 240, generator=torch.Generator().manual_seed(0))
    >>> emb = WindowEncoder(b, scales=(3,), chunk_size=100)(x)
    >>> bool(torch.allclose(emb.image, b.model.encode_image(x), atol=1e-5))
    True
    """

    def __init__(self, bundle: Any, scales: Sequence[int] = (2, 3), stride: int = 1,
                 chunk_size: int = DEFAULT_CHUNK) -> None:
        self.bundle = bundle
        visual = getattr(getattr(bundle, "model", None), "visual", None)  # an open_clip ViT this class can drive
        needed = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "ln_post", "proj")
        missing = [a for a in needed if not hasattr(visual, a)]
        if visual is None or missing:
            raise ValueError(f"bundle.model.visual must be an open_clip VisionTransformer (missing {missing}); "
                             "load the model with cfviz.models.load_clip / random_clip / tiny_clip")
        if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") not in ("tok", "avg"):
            raise ValueError(f"{bundle.name}: window embeddings need class-token or average pooling; "
                             "attentional pooling (CoCa) and pool_type='none' are not supported")
        self.visual = visual
        self.grid = tuple(int(g) for g in bundle.grid_size)
        scales = tuple(scales)
        if len(set(scales)) != len(scales):
            raise ValueError(f"scales must not repeat, got {scales}")
        for s in scales:
            check_scale(self.grid, s, stride)
        if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer (window sequences per pass), got {chunk_size!r}")
        self.scales, self.stride, self.chunk_size = scales, int(stride), int(chunk_size)
        self.boxes = {s: window_boxes(self.grid, s, stride) for s in scales}
        self._indices = {s: window_patch_indices(b, self.grid) for s, b in self.boxes.items()}

    # -- pieces of the visual tower, called directly (no hooks) --------------------------------
    def tokens(self, images: Any) -> Any:
        """``(B, 1 + gh*gw, W)``: class + patch tokens after positional embedding and ``ln_pre``.

        ``ln_pre`` acts on each token alone, so applying it before selecting a window's tokens
        equals applying it to the selection (what anomalib does after its hook).
        """
        import torch

        v = self.visual
        x = v.conv1(images.to(v.conv1.weight.dtype))  # (B, W, gh, gw)
        x = x.flatten(2).transpose(1, 2)  # (B, gh*gw, W), row-major patches
        cls = v.class_embedding.to(x.dtype).reshape(1, 1, -1).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        return v.ln_pre(x)

    def _pooled(self, x: Any) -> Any:
        """Projected pooled embedding of transformer outputs ``(N, L, W)`` (open_clip's rules)."""
        v = self.visual
        if getattr(v, "pool_type", "tok") == "avg":
            if getattr(v, "final_ln_after_pool", False):
                pooled = v.ln_post(x[:, 1:].mean(dim=1))
            else:
                pooled = v.ln_post(x[:, 1:]).mean(dim=1)
        else:  # "tok": ln_post is per token, so before or after pooling is the same
            pooled = v.ln_post(x[:, 0])
        return pooled @ v.proj if v.proj is not None else pooled

    # -- public --------------------------------------------------------------------------------
    def __call__(self, images: Any) -> VisualEmbeddings:
        return self.encode(images)

    def encode(self, images: Any, scales: Sequence[int] | None = None) -> VisualEmbeddings:
        """Image, patch and window embeddings of ``images`` ``(B, 3, H, W)`` (already normalised)."""
        import torch

        scales = self.scales if scales is None else tuple(scales)
        for s in scales:
            if s not in self._indices:
                raise ValueError(f"scale {s} was not set up; this encoder has scales {self.scales}")
        images = check_images(images, self.bundle)
        with torch.inference_mode():
            tokens = self.tokens(images)
            v = self.visual
            x = run_transformer(v.transformer, tokens)
            image = self._pooled(x)
            patch_tokens = v.ln_post(x[:, 1:])
            patches = patch_tokens @ v.proj if v.proj is not None else patch_tokens
            windows = {s: self.window_embeddings(tokens, s) for s in scales}
        return VisualEmbeddings(image=image.float(), patches=patches.float(), patch_tokens=patch_tokens.float(),
                                windows=windows, boxes={s: self.boxes[s] for s in scales}, grid=self.grid)

    def window_embeddings(self, tokens: Any, scale: int) -> Any:
        """``(B, n, D)`` embeddings of every ``scale`` window, batched and chunked.

        ``tokens`` is the output of :meth:`tokens`. Rows of the flattened ``(image, window)``
        list are gathered chunk by chunk, so at most ``chunk_size`` short sequences exist at once.
        """
        import torch

        idx = self._indices[scale].to(tokens.device)
        n = idx.shape[0]
        seq = torch.cat([torch.zeros(n, 1, dtype=torch.long, device=tokens.device), idx + 1], dim=1)  # CLS first
        total = tokens.shape[0] * n
        out = []
        with torch.inference_mode():
            for start in range(0, total, self.chunk_size):
                rows = torch.arange(start, min(start + self.chunk_size, total), device=tokens.device)
                batch = tokens[(rows // n)[:, None], seq[rows % n]]  # (c, 1 + scale^2, W)
                out.append(self._pooled(run_transformer(self.visual.transformer, batch)).float())
        return torch.cat(out).reshape(tokens.shape[0], n, -1)


def check_images(images: Any, bundle: Any, name: str = "images") -> Any:
    """Validate a ``(B, 3, S, S)`` float batch for ``bundle`` and move it to its device/dtype."""
    import torch

    size = int(bundle.image_size)
    fix = (f"give a (batch, 3, {size}, {size}) float tensor normalised with the CLIP mean/std, e.g. "
           "from cfviz.data.transforms.clip_batch")
    if not torch.is_tensor(images):
        raise TypeError(f"{name} must be a torch tensor; {fix}")
    if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != (size, size):
        raise ValueError(f"{name} has shape {tuple(images.shape)} but {bundle.name} takes "
                         f"(batch, 3, {size}, {size}); {fix}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch; pass at least one image")
    if not images.is_floating_point():
        raise ValueError(f"{name} has dtype {images.dtype}; {fix}")
    if not torch.isfinite(images).all():
        raise ValueError(f"{name} contains NaN or inf values; {fix}")
    return images.to(device=torch.device(bundle.device), dtype=getattr(torch, str(bundle.dtype)))
