"""Bad input to the metrics gets one clear MetricInputError naming the argument."""

from __future__ import annotations

import numpy as np
import pytest

from cfviz.errors import CfvizError
from cfviz.metrics import (MetricInputError, PixelCurves, aupro, auroc, average_precision, f1_max, image_metrics,
                           pixel_metrics, pro_curve)


def test_error_class_is_a_cfviz_value_error():
    assert issubclass(MetricInputError, CfvizError) and issubclass(MetricInputError, ValueError)


@pytest.mark.parametrize("fn", [auroc, average_precision])
def test_one_class_only(fn):
    with pytest.raises(MetricInputError, match=r"y holds only class 0 \(normal\).*1 \(anomalous\)"):
        fn([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(MetricInputError, match=r"y holds only class 1 \(anomalous\).*0 \(normal\)"):
        fn([1, 1], [0.1, 0.2])


def test_f1_needs_a_positive_but_not_a_negative():
    with pytest.raises(MetricInputError, match="y holds only class 0"):
        f1_max([0, 0], [0.1, 0.2])
    assert f1_max([1, 1], [0.1, 0.2]) == (1.0, 0.1)


def test_image_metrics_one_class_names_labels():
    with pytest.raises(MetricInputError, match="labels holds only class 0"):
        image_metrics([0, 0], [0.3, 0.4])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores(bad):
    with pytest.raises(MetricInputError, match=r"scores holds 1 NaN or infinite"):
        image_metrics([0, 1, 1], [0.1, bad, 0.3])
    maps = np.zeros((2, 4, 4), np.float32)
    maps[1, 2, 2] = bad
    masks = np.zeros((2, 4, 4), bool)
    masks[0, 1, 1] = True
    with pytest.raises(MetricInputError, match=r"maps holds 1 NaN"):
        pixel_metrics(masks, maps)


def test_shape_mismatches():
    with pytest.raises(MetricInputError, match=r"y has 3 values but s has 2"):
        auroc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(MetricInputError, match=r"labels must be 1-D"):
        image_metrics(np.zeros((2, 2)), np.zeros((2, 2)))
    masks = np.zeros((2, 8, 8), bool)
    masks[0, 0, 0] = True
    with pytest.raises(MetricInputError, match=r"masks have shape \(2, 8, 8\) but maps have shape \(2, 4, 4\)"):
        pixel_metrics(masks, np.zeros((2, 4, 4)))
    with pytest.raises(MetricInputError, match=r"maps must have shape \(N, H, W\)"):
        aupro(masks, np.zeros(128))
    with pytest.raises(MetricInputError, match=r"maps\[1\] has shape \(4, 4\) but maps\[0\] has shape \(8, 8\)"):
        pixel_metrics(masks, [np.zeros((8, 8)), np.zeros((4, 4))])


def test_empty_inputs():
    with pytest.raises(MetricInputError, match="empty"):
        auroc([], [])
    with pytest.raises(MetricInputError, match="empty"):
        pixel_metrics(np.zeros((0, 4, 4), bool), np.zeros((0, 4, 4)))


def test_masks_must_be_binary():
    masks = np.zeros((1, 4, 4), np.uint8)
    masks[0, 1, 1] = 255
    with pytest.raises(MetricInputError, match=r"masks must be binary.*255.*0/255: pass \(masks > 0\)"):
        pixel_metrics(masks, np.zeros((1, 4, 4)))
    with pytest.raises(MetricInputError, match=r"masks must be binary.*0.5"):
        aupro(np.full((1, 4, 4), 0.5), np.zeros((1, 4, 4)))
    with pytest.raises(MetricInputError, match=r"y must be binary.*2"):
        auroc([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(MetricInputError, match=r"y must be binary.*-1"):
        auroc([0, 1, -1], [0.1, 0.2, 0.3])
    with pytest.raises(MetricInputError, match=r"y must be binary"):
        auroc(["a", "b"], [0.1, 0.2])


def test_scores_must_be_real():
    with pytest.raises(MetricInputError, match=r"s must hold real numbers"):
        auroc([0, 1], [1 + 1j, 2])
    with pytest.raises(MetricInputError, match=r"s could not be read as a NumPy array"):
        auroc([0, 1], [[0.1], [0.2, 0.3]])


def test_aupro_needs_regions_and_normal_pixels():
    maps = np.random.default_rng(0).random((2, 4, 4))
    with pytest.raises(MetricInputError, match="masks hold no defect pixel in any image"):
        aupro(np.zeros((2, 4, 4), bool), maps)
    with pytest.raises(MetricInputError, match="masks mark every pixel as defective"):
        aupro(np.ones((2, 4, 4), bool), maps)
    with pytest.raises(MetricInputError, match="masks holds only class 0"):
        pixel_metrics(np.zeros((2, 4, 4), bool), maps)
    with pytest.raises(MetricInputError, match="masks hold no defect pixel"):
        pro_curve(np.zeros((2, 4, 4), bool), maps)


def test_parameter_checks():
    masks = np.zeros((1, 4, 4), bool)
    masks[0, 0, 0] = True
    maps = np.zeros((1, 4, 4))
    for bad in (0, -0.1, 1.5, "x", float("nan")):
        with pytest.raises(MetricInputError, match="fpr_limit must"):
            aupro(masks, maps, fpr_limit=bad)
    with pytest.raises(MetricInputError, match="connectivity must be 4 or 8"):
        aupro(masks, maps, connectivity=6)
    with pytest.raises(MetricInputError, match="n_jobs must be a positive integer"):
        PixelCurves.from_maps(masks, maps, n_jobs=0)
