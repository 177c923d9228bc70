"""Packaging: environment.yml in step with pyproject, the lock file covering it, a light import."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _env_pip_lines() -> list[str]:
    """The pip section of environment.yml (read without a YAML library: its layout is fixed)."""
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    out = []
    for line in lines[start + 1:]:
        m = re.match(r'^\s+-\s+"?([^"]+)"?\s*$', line)
        if not m:
            break
        out.append(m.group(1))
    return out


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject_dependencies() -> None:
    deps = _pyproject()["project"]["dependencies"]
    pip = [r for r in _env_pip_lines() if not r.startswith("-e")]
    assert sorted(pip) == sorted(deps), "environment.yml's pip section must list pyproject's dependencies exactly"
    assert "-e ." in _env_pip_lines(), "environment.yml must install the package itself"
    text = (ROOT / "environment.yml").read_text()
    assert re.search(r"^\s+-\s+python=3\.11\s*$", text, re.M)


def test_python_range_admits_the_conda_python() -> None:
    assert _pyproject()["project"]["requires-python"] == ">=3.11,<3.13"


def test_every_dependency_has_a_tested_upper_bound_and_is_locked() -> None:
    from packaging.requirements import Requirement
    from packaging.version import Version

    lock = {}
    for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            lock[_name(name)] = Version(version.split(";")[0].strip())
    project = _pyproject()["project"]
    for raw in project["dependencies"] + project["optional-dependencies"]["dev"]:
        req = Requirement(raw)
        assert any(s.operator in ("<", "<=") for s in req.specifier), f"{raw}: give a tested upper bound"
        name = _name(req.name)
        assert name in lock, f"{name} is not pinned in requirements/constraints.txt (run `make lock`)"
        assert lock[name] in req.specifier, f"locked {name}=={lock[name]} is outside {raw}"


def test_import_and_version_are_light() -> None:
    code = ("import sys, cfviz, cfviz.data, cfviz.clip, cfviz.viz, cfviz.experiments, cfviz.cli; "
            "heavy = [m for m in ('torch', 'diffusers', 'matplotlib', 'open_clip', 'transformers', 'pandas') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("argv", [["--version"]])
def test_cli_version(argv: list[str]) -> None:
    from cfviz._version import __version__

    cfviz = Path(sys.executable).with_name("cfviz")
    cmd = [str(cfviz)] if cfviz.exists() else [sys.executable, "-m", "cfviz.cli"]
    out = subprocess.run([*cmd, *argv], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"cfviz {__version__}"


def test_readme_shows_the_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_lazy_public_names_are_the_functions_even_after_submodule_imports() -> None:
    code = ("import cfviz.evaluation.runner, cfviz.evaluation.extraction, cfviz.capture.store; "
            "from cfviz.experiments import evaluate, extract; import cfviz; "
            "print(callable(evaluate), evaluate.__name__, extract.__name__, callable(cfviz.capture), "
            "cfviz.capture.CaptureStore.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "evaluate", "extract", "True", "CaptureStore"]


def test_oldest_txt_pins_exactly_pyproject_lower_bounds() -> None:
    """`make test-oldest` installs requirements/oldest.txt: every declared lower bound, nothing else."""
    project = _pyproject()["project"]
    want = {}
    for raw in project["dependencies"] + project["optional-dependencies"]["dev"]:
        low = re.search(r">=\s*([^,;\s]+)", raw)
        assert low, f"{raw}: give a lower bound (the oldest version `make test-oldest` tests)"
        want[_name(raw)] = low.group(1)
    got = {}
    for line in (ROOT / "requirements" / "oldest.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==", 1)
            got[_name(name)] = version
    assert got == want, "requirements/oldest.txt is stale: run `python requirements/tested_versions.py`"


def test_make_test_oldest_runs_the_model_facing_tests_in_its_own_venv() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\ntest-oldest:", 1)[1].split("\n\n", 1)[0]
    for folder in ("tests/models", "tests/capture", "tests/clip", "tests/diffusion", "tests/metrics"):
        assert folder in makefile, f"make test-oldest must run {folder}"
    assert "OLDEST" in recipe and "oldest.txt" in makefile
    commands = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert commands.index("make test-oldest") > commands.index("make test"), "CI runs make test-oldest after make test"


def test_make_install_shows_its_steps_and_pips_progress() -> None:
    """Issue 21: `make demo` on a fresh machine spent ~10 min in a silent `pip --quiet` install."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\n$(STAMP):", 1)[1].split("\n\n", 1)[0]
    install = [line for line in recipe.splitlines() if "pip install" in line]
    assert len(install) == 1 and "--quiet" not in install[0] and " -q" not in install[0]
    steps = re.findall(r'@echo "\[(\d)/(\d)\]', recipe)
    assert [int(i) for i, _ in steps] == list(range(1, len(steps) + 1)) and len(steps) >= 2
    assert recipe.index("[2/") < recipe.index("pip install")  # said before the long step starts
