"""WinCLIP's compositional prompt ensemble."""

from __future__ import annotations

import pytest

from cfviz.clip.prompts import (ANOMALOUS_STATES, NORMAL_STATES, TEMPLATES, clean_class_name, compose_prompts,
                                prompt_ensemble)


def test_list_sizes_and_duplicate_template():
    assert len(NORMAL_STATES) == 7 and len(ANOMALOUS_STATES) == 4 and len(TEMPLATES) == 21
    assert TEMPLATES.count("a jpeg corrupted photo of the {}.") == 2  # kept as in anomalib
    assert len(set(TEMPLATES)) == 20


@pytest.mark.parametrize("name", ["bottle", "metal_nut", "pipe_fryum", None])
def test_counts_per_class(name):
    normal, anomalous = prompt_ensemble(name)
    assert len(normal) == 147 and len(anomalous) == 84
    word = clean_class_name(name)
    assert all(word in p for p in normal + anomalous)
    assert not set(normal) & set(anomalous)


def test_content_and_order():
    normal, anomalous = prompt_ensemble("metal_nut")
    assert normal[0] == "a cropped photo of the metal nut."
    assert normal[21] == "a cropped photo of the flawless metal nut."  # state-major
    assert normal[-1] == "a photo of a metal nut without damage for anomaly detection."
    assert anomalous[0] == "a cropped photo of the damaged metal nut."
    assert anomalous[-1] == "a photo of a metal nut with damage for anomaly detection."
    assert "a photo of the small metal nut with defect." in anomalous


def test_clean_class_name():
    assert clean_class_name("metal_nut") == "metal nut"
    assert clean_class_name("  pcb1 ") == "pcb1"
    assert clean_class_name("a__b  c") == "a b c"
    assert clean_class_name(None) == clean_class_name("  ") == clean_class_name("_") == "object"
    with pytest.raises(TypeError, match="class_name"):
        clean_class_name(3)


def test_compose_rejects_bad_lists():
    with pytest.raises(ValueError, match="slot"):
        compose_prompts("screw", ["damaged"], TEMPLATES)
    with pytest.raises(ValueError, match="slot"):
        compose_prompts("screw", NORMAL_STATES, ["a photo"])
    with pytest.raises(ValueError, match="non-empty"):
        compose_prompts("screw", [], TEMPLATES)
