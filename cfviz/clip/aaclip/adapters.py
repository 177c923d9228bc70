"""The trainable part of AA-CLIP: residual adapters and projections (CLIP itself stays frozen).

As in the released code (``model/adapter_modules.py``, ``model/adapter.py``):

* ``SimpleAdapter(c, c)`` = bias-free Linear + LeakyReLU, one after each of the first ``K``
  blocks of a tower; mixed in with :func:`residual_mix`;
* ``seg_proj``: one bias-free Linear (vision width -> joint dim) per patch level;
* ``det_proj``: the same for the detection (image-score) token;
* ``text_proj``: bias-free Linear (text width -> joint dim) + LeakyReLU, replacing CLIP's
  ``text_projection``.

Example
-------
>>> import torch
>>> from cfviz.models import tiny_clip
>>> from cfviz.clip.aaclip.config import AAClipConfig
>>> b = tiny_clip(seed=0)
>>> ad = AAClipAdapters(AAClipConfig().resolve(b), b, seed=0)
>>> len(ad.text_adapters), len(ad.image_adapters), len(ad.seg_proj), ad.det_proj[0].weight.shape
(1, 1, 4, torch.Size([32, 64]))
>>> x = torch.randn(2, 5, 64)
>>> bool(torch.equal(residual_mix(x, torch.randn(2, 5, 64), 0.0), x))
True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cfviz.clip.aaclip.config import AAClipConfig


def _linear(c_in: int, c_out: int, relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(c_in, c_out, bias=False)]
    if relu:
        layers.append(nn.LeakyReLU())
    return nn.Sequential(*layers)


def residual_mix(x: torch.Tensor, adapted: torch.Tensor, weight: float) -> torch.Tensor:
    """``weight * a * |x|/|a| + (1 - weight) * x`` per token (AA-CLIP's norm-matched residual).

    With ``weight == 0`` it returns ``x`` itself (exactly plain CLIP).

    >>> x = torch.tensor([[3.0, 4.0]])
    >>> residual_mix(x, torch.tensor([[0.0, 1.0]]), 1.0)
    tensor([[0., 5.]])
    """
    if weight == 0:
        return x
    scale = x.norm(dim=-1, keepdim=True) / adapted.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return weight * adapted * scale + (1 - weight) * x


class AAClipAdapters(nn.Module):
    """Adapters and projections for one CLIP model and one resolved :class:`AAClipConfig`.

    Parameters
    ----------
    config:
        A resolved config (:meth:`AAClipConfig.resolve`).
    bundle:
        The :class:`~cfviz.models.bundle.ClipBundle` the adapters attach to (widths, joint dim,
        and CLIP's projections for ``init="clip"``).
    seed:
        Seed of the initial weights (recorded by the trainer).
    """

    def __init__(self, config: AAClipConfig, bundle: Any, *, seed: int = 0) -> None:
        super().__init__()
        if config.levels is None or config.text_adapter_blocks is None or config.image_adapter_blocks is None:
            raise ValueError("AAClipAdapters needs a resolved config: call config.resolve(bundle) first")
        model = bundle.model
        v_width = int(model.visual.transformer.width)
        t_width = int(model.transformer.width)
        dim = int(bundle.embed_dim)
        self.config = config
        self.text_adapters = nn.ModuleList(_linear(t_width, t_width, True) for _ in range(config.text_adapter_blocks))
        self.text_proj = _linear(t_width, dim, config.text_proj_relu)
        self.image_adapters = nn.ModuleList(_linear(v_width, v_width, True)
                                            for _ in range(config.image_adapter_blocks))
        self.seg_proj = nn.ModuleList(_linear(v_width, dim, config.proj_relu) for _ in config.levels)
        self.det_proj = _linear(v_width, dim, config.proj_relu)
        self.reset_parameters(bundle, seed)

    def reset_parameters(self, bundle: Any, seed: int) -> None:
        """Xavier-uniform (seeded), or CLIP's projections and identity adapters for ``init="clip"``."""
        gen = torch.Generator().manual_seed(int(seed))
        model = bundle.model
        with torch.no_grad():
            for lin in self.linears():
                if self.config.init == "clip":
                    continue
                bound = (6.0 / (lin.in_features + lin.out_features)) ** 0.5
                lin.weight.copy_(torch.rand(lin.weight.shape, generator=gen) * 2 * bound - bound)
            if self.config.init == "clip":
                for seq in [*self.text_adapters, *self.image_adapters]:
                    seq[0].weight.copy_(torch.eye(seq[0].weight.shape[0]))
                proj = model.visual.proj
                for seq in [*self.seg_proj, self.det_proj]:
                    seq[0].weight.copy_(proj.detach().float().T)
                tp = model.text_projection
                tw = tp.weight if isinstance(tp, nn.Linear) else tp.detach().float().T
                self.text_proj[0].weight.copy_(tw)

    def linears(self) -> list[nn.Linear]:
        """Every Linear layer (the trainable weights)."""
        return [m for m in self.modules() if isinstance(m, nn.Linear)]

    def text_parameters(self) -> list[nn.Parameter]:
        """Stage-1 parameters: text adapters and the text projection."""
        return [*self.text_adapters.parameters(), *self.text_proj.parameters()]

    def image_parameters(self) -> list[nn.Parameter]:
        """Stage-2 parameters: vision adapters, segmentation and detection projections."""
        return [*self.image_adapters.parameters(), *self.seg_proj.parameters(), *self.det_proj.parameters()]
