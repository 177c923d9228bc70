"""The runtime check of dependency versions against the tested set (oldest.txt .. constraints.txt)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from cfviz._tested_versions import TESTED
from cfviz.utils import versions
from cfviz.utils.versions import UntestedVersionWarning, release, untested_versions, warn_untested_versions

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("tested_versions", ROOT / "requirements" / "tested_versions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tested_versions_module_matches_the_requirement_files() -> None:
    gen = _generator()
    assert (ROOT / "cfviz" / "_tested_versions.py").read_text() == gen.render_module(), (
        "cfviz/_tested_versions.py is stale: run `python requirements/tested_versions.py`")
    oldest = gen.pins((ROOT / "requirements" / "oldest.txt").read_text())
    newest = gen.pins((ROOT / "requirements" / "constraints.txt").read_text())
    for name, (low, high) in TESTED.items():
        assert (oldest[name], newest[name]) == (low, high)


def test_release_compares_numbers_not_strings() -> None:
    assert release("2.14.1") > release("2.9")
    assert release("2.1.0+cu121") == release("2.1") == release("2.1.0")
    with pytest.raises(ValueError, match="release number"):
        release("latest")


@pytest.mark.parametrize(("name", "version", "outside"), [
    ("open-clip-torch", "2.23.0", True),   # older than the oldest tested (2.24)
    ("open-clip-torch", "2.24.0", False),  # the oldest tested, anomalib's pin
    ("open-clip-torch", "3.3.0", False),   # the newest tested
    ("open-clip-torch", "3.4.0", True),    # newer than the newest tested
    ("torch", "2.14.1+cpu", False),        # local labels do not count
    ("torch", "2.14.2", True),
    ("diffusers", None, False),            # not installed: nothing to say
])
def test_untested_versions_flags_only_what_lies_outside(name: str, version: str | None, outside: bool) -> None:
    found = untested_versions({name: version})
    assert (name in found) == outside
    if outside:
        assert found[name] == (version, *TESTED[name])


def test_the_warning_names_the_package_and_range_and_comes_once() -> None:
    env = {"transformers": "4.39.3", "numpy": "2.4.6"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_untested_versions(env)
        warn_untested_versions(env)
    assert len(caught) == 1
    assert issubclass(caught[0].category, UntestedVersionWarning) and issubclass(caught[0].category, UserWarning)
    low, high = TESTED["transformers"]
    assert f"transformers 4.39.3 (tested {low} to {high})" in str(caught[0].message)
    assert "numpy" not in str(caught[0].message)


def test_loading_a_model_warns_when_a_version_is_untested(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    from cfviz.models import tiny_clip

    real = versions.installed_version
    monkeypatch.setattr(versions, "installed_version", lambda name: "0.0.1" if name == "numpy" else real(name))
    versions._environment.cache_clear()
    try:
        with pytest.warns(UntestedVersionWarning, match=r"numpy 0\.0\.1"):
            tiny_clip(seed=0)
    finally:
        versions._environment.cache_clear()


def test_the_installed_environment_is_a_tested_one() -> None:
    """`make test` and `make test-oldest` install tested sets: no warning there."""
    versions._environment.cache_clear()
    assert untested_versions() == {}


def test_import_cfviz_does_not_check_or_import_torch() -> None:
    code = ("import sys, cfviz, cfviz.utils.versions; "
            "print('torch' in sys.modules, 'cfviz._tested_versions' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]
