"""AA-CLIP under ``--dtype bfloat16``: float32 adapters on a bfloat16 CLIP (they used to meet in one matmul and fail)."""

from __future__ import annotations

import pytest
import torch

from cfviz.clip.aaclip import AAClip, AAClipConfig
from cfviz.models import tiny_clip


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_aaclip_predicts_on_a_half_precision_clip_close_to_float32(dtype: torch.dtype) -> None:
    from cfviz.evaluation.preflight import cpu_has_half_kernels

    if dtype == torch.float16 and not cpu_has_half_kernels():
        pytest.skip(f"torch {torch.__version__} has no CPU float16 kernels (preflight refuses --dtype float16 there)")
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    results = {}
    for dt in (torch.float32, dtype):
        bundle = tiny_clip(seed=0, dtype=dt)
        model = AAClip(bundle, AAClipConfig(), seed=0)
        assert next(model.adapters.parameters()).dtype == torch.float32  # the adapters stay float32
        x = torch.nn.functional.interpolate(images, size=(bundle.image_size,) * 2, mode="bilinear")
        results[dt] = model.predict(x, ["bottle", "cable"])
    low, ref = results[dtype], results[torch.float32]
    assert low.anomaly_map.dtype == torch.float32 and torch.isfinite(low.anomaly_map).all()
    assert low.anomaly_map.shape == ref.anomaly_map.shape
    # half precision moves the numbers a little (bfloat16 keeps 8 mantissa bits), not the picture
    spread = ref.anomaly_map.std()
    assert (low.anomaly_map - ref.anomaly_map).abs().max() < 0.1 * spread
    corr = torch.corrcoef(torch.stack([low.anomaly_map.flatten(), ref.anomaly_map.flatten()]))[0, 1]
    assert corr > 0.99
    assert torch.allclose(low.image_score, ref.image_score, atol=1e-3)
