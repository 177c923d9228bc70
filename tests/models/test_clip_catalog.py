"""Checks that need only a CLIP name, tag or file import no model library (issue 19).

Before: ``preflight`` imported open_clip (and with it torch) to list architectures and tags, so a
bad ``--clip-arch`` took 10-40 s to fail on a loaded machine, and ``--clip pretrained`` offline
passed preflight and failed only when the models loaded, after the data set was generated.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cfviz.models import clip_catalog

HEAVY = ("torch", "open_clip", "diffusers", "transformers", "timm")

_PROBE = r"""
import json, sys
from cfviz.errors import ConfigError
from cfviz.evaluation.config import ExtractionConfig, ModelChoice, RunSpec
from cfviz.evaluation.preflight import preflight
out = {}
for key, choice in [("pretrained", ModelChoice(clip="pretrained")),
                    ("bad_arch", ModelChoice(clip="random", clip_arch="ViT-B-16-plu")),
                    ("bad_tag", ModelChoice(clip="pretrained", clip_pretrained="laion400m_e3")),
                    ("hub_tag", ModelChoice(clip="pretrained", clip_arch="ViT-B-32", clip_pretrained="openai")),
                    ("missing_file", ModelChoice(clip="pretrained", clip_pretrained="/no/such/clip.safetensors")),
                    ("random_ok", ModelChoice(clip="random", clip_arch="ViT-B-32")),
                    ("tiny_like_ok", ModelChoice(clip="tiny", clip_arch="ViT-L-14-336"))]:
    try:
        preflight(RunSpec(models=choice, extraction=ExtractionConfig(clip_size=None)))
        out[key] = "passed"
    except ConfigError as exc:
        out[key] = exc.phrase({"models.clip_pretrained": "--clip-pretrained", "models.clip_arch": "--clip-arch"})
out["imported"] = sorted(m for m in sys.modules if m.split(".")[0] in %r)
print(json.dumps(out))
"""


def test_preflight_of_clip_names_and_files_imports_no_model_library(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "HOME": str(tmp_path)}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", _PROBE % (HEAVY,)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got.pop("imported") == [], "a check that needs only a name or a file imported a model library"
    assert "'laion400m_e32': the ViT-B-16-plus-240 weights are not in the local cache" in got["pretrained"]
    assert "HF_HUB_OFFLINE is set; pass a checkpoint file as --clip-pretrained" in got["pretrained"]
    assert "'openai': the ViT-B-32 weights are not in the local cache" in got["hub_tag"]
    assert "did you mean 'ViT-B-16-plus'" in got["bad_arch"]
    assert "did you mean 'laion400m_e32'" in got["bad_tag"]
    assert "/no/such/clip.safetensors does not exist" in got["missing_file"]
    assert got["random_ok"] == got["tiny_like_ok"] == "passed"


def test_a_cached_tag_passes_offline(tmp_path: Path, monkeypatch) -> None:
    """The cache check finds the file open_clip would load, so offline runs with cached weights go on:
    the hub layout where the installed open_clip names a hub repository for ViT-B-32 'openai', else
    (open_clip 2.24, ``make test-oldest``) its release-URL download folder ``~/.cache/clip``."""
    from cfviz.evaluation.preflight import check_clip_weights_cached

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = clip_catalog.pretrained_cfg("ViT-B-32", "openai")
    if cfg.get("hf_hub"):
        assert cfg["hf_hub"] == "timm/vit_base_patch32_clip_224.openai/"
        snapshot = tmp_path / "hub" / "models--timm--vit_base_patch32_clip_224.openai" / "snapshots" / ("a" * 40)
        snapshot.mkdir(parents=True)
        (snapshot / "open_clip_model.safetensors").write_bytes(b"x")
        (snapshot.parents[1] / "refs").mkdir()
        (snapshot.parents[1] / "refs" / "main").write_text("a" * 40)
    else:
        (tmp_path / "home" / ".cache" / "clip").mkdir(parents=True)
        (tmp_path / "home" / ".cache" / "clip" / os.path.basename(cfg["url"])).write_bytes(b"x")
    check_clip_weights_cached("ViT-B-32", "openai")  # no error


def test_catalog_equals_open_clip_for_every_architecture_and_tag() -> None:
    """The files, parsed, give what open_clip itself answers (run against the installed version)."""
    import open_clip
    from open_clip import pretrained

    configs = clip_catalog._file_configs()
    assert configs is not None and list(configs) == open_clip.list_models()
    assert all(configs[name] == open_clip.get_model_config(name) for name in configs)
    table = clip_catalog._file_pretrained()
    assert table is not None and list(table) == list(pretrained._PRETRAINED)
    for arch, tags in pretrained._PRETRAINED.items():
        assert list(table[arch]) == list(tags)
        for tag, cfg in tags.items():
            for key in ("url", "hf_hub", "quick_gelu"):
                assert table[arch][tag].get(key) == cfg.get(key), (arch, tag, key)


_HEAD = "def _pcfg(url='', hf_hub='', **kwargs):\n    return {'url': url, 'hf_hub': hf_hub, **kwargs}\n"


def test_both_pretrained_layouts_are_read() -> None:
    """open_clip 2.24 passes the URL positionally and lists QuickGELU twins by hand; newer releases pass
    keywords and add the twins in a loop after the table. Both read as open_clip builds them; an unknown
    change of the table after it is written reads as unknown (None: open_clip is then imported)."""
    old = _HEAD + ("_A = dict(openai=_pcfg('https://x/A.pt'), t=_pcfg('https://x/t.pt', 'org/repo/'))\n"
                   "_PRETRAINED = {'A': _A, 'A-quickgelu': dict(yfcc=_pcfg('https://x/q.pt'))}\n")
    assert clip_catalog._parse_pretrained(old) == {
        "A": {"openai": {"url": "https://x/A.pt", "hf_hub": ""}, "t": {"url": "https://x/t.pt", "hf_hub": "org/repo/"}},
        "A-quickgelu": {"yfcc": {"url": "https://x/q.pt", "hf_hub": ""}}}
    new = _HEAD + ("_PRETRAINED = {'A': dict(openai=_pcfg(url='https://x/A.pt', hf_hub='h/', quick_gelu=True),\n"
                   "                        b=_pcfg(hf_hub='b/'))}\n"
                   "_PRETRAINED_quickgelu = {}\n"
                   "for k, v in _PRETRAINED.items():\n"
                   "    q = {tk: tv for tk, tv in v.items() if tv.get('quick_gelu', False)}\n"
                   "    if q:\n"
                   "        _PRETRAINED_quickgelu[k + '-quickgelu'] = q\n"
                   "_PRETRAINED.update(_PRETRAINED_quickgelu)\n")
    twin = {"url": "https://x/A.pt", "hf_hub": "h/", "quick_gelu": True}
    assert clip_catalog._parse_pretrained(new) == {"A": {"openai": twin, "b": {"url": "", "hf_hub": "b/"}},
                                                   "A-quickgelu": {"openai": twin}}
    assert clip_catalog._parse_pretrained(old.replace("_pcfg('https://x/A.pt')", "_pcfg('u', 'h', 'extra')")) is None
    assert clip_catalog._parse_pretrained(old + "_PRETRAINED['B'] = _A\n") is None
    assert clip_catalog._parse_pretrained(new.replace("update(_PRETRAINED_quickgelu)", "update(_OTHER)")) is None
