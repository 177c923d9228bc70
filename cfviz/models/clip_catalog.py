"""open_clip's architectures and pretrained tags, read from its files without importing it.

Checking a CLIP name, tag or input size needs only open_clip's model configuration files
(``open_clip/model_configs/*.json``) and its table of published weights (``open_clip/pretrained.py``);
importing open_clip imports torch, which takes seconds to tens of seconds on a loaded machine. So
these functions read the files (parsed once, never executed), and ask open_clip itself only when
it is already imported (it then also knows configs added with ``open_clip.add_model_config``) or
when its files cannot be read this way (another layout: then it is imported, as before).

The answers equal open_clip's own (``tests/models/test_clip_catalog.py`` compares them for every
architecture and tag of the installed version).

>>> "ViT-B-16-plus-240" in list_models(), get_model_config("ViT-B-16-plus-240")["vision_cfg"]["image_size"]
(True, 240)
>>> pretrained_tags("ViT-B-16-plus-240")
['laion400m_e31', 'laion400m_e32']
"""

from __future__ import annotations

import ast
import copy
import functools
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

#: the configuration keys open_clip requires of a model config file (``factory._rescan_model_configs``)
_CONFIG_KEYS = ("embed_dim", "vision_cfg", "text_cfg")


def _package_dir() -> Path | None:
    """open_clip's folder, found without importing it (None when it is not installed)."""
    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else None


@functools.lru_cache(maxsize=1)
def _file_configs() -> dict[str, dict[str, Any]] | None:
    folder = _package_dir()
    if folder is None or not (folder / "model_configs").is_dir():
        return None
    configs = {}
    for path in sorted((folder / "model_configs").glob("*.json")):
        cfg = json.loads(path.read_text())
        if all(k in cfg for k in _CONFIG_KEYS):
            configs[path.stem] = cfg
    # natural order, as open_clip lists them: ViT-B-16 before ViT-B-100
    return dict(sorted(configs.items(), key=lambda item: [int(s) if s.isdigit() else s
                                                          for s in re.split(r"(\d+)", item[0].lower())]))


class _Unknown(Exception):
    pass


def _value(node: ast.AST, names: dict[str, Any], params: dict[str, list[str]]) -> Any:
    """The value of a literal-like expression of ``pretrained.py`` (dicts, strings, config calls);
    ``params`` names the positional parameters of its config functions (``_pcfg(url='', hf_hub='', **kwargs)``)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return names.get(node.id)  # constants from elsewhere (mean, std) are not needed: None
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise _Unknown("dict unpacking")
        return {_value(k, names, params): _value(v, names, params)  # type: ignore[arg-type]
                for k, v in zip(node.keys, node.values)}
    if isinstance(node, (ast.Tuple, ast.List)):
        return [_value(e, names, params) for e in node.elts]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and all(kw.arg for kw in node.keywords):
        fields = {kw.arg: _value(kw.value, names, params) for kw in node.keywords}
        if node.func.id == "dict" and not node.args:
            return fields
        positional = params.get(node.func.id, [])
        if node.func.id == "dict" or len(node.args) > len(positional):
            raise _Unknown(ast.dump(node)[:80])
        # _pcfg("https://...") (open_clip 2.24) or _pcfg(url=..., hf_hub=...): {url, hf_hub, **kwargs}
        fields.update({p: _value(a, names, params) for p, a in zip(positional, node.args)})
        return {"url": "", "hf_hub": "", **fields}
    raise _Unknown(ast.dump(node)[:80])


def _mutates(stmt: ast.stmt, name: str) -> bool:
    """Whether a module-level statement changes the dict ``name`` in place (``name.update(...)``, ``name[k] = v``)."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return False
    for node in ast.walk(stmt):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == name:
            if node.attr not in ("items", "keys", "values", "get"):
                return True
        if (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == name
                and not isinstance(node.ctx, ast.Load)):
            return True
    return False


@functools.lru_cache(maxsize=1)
def _file_pretrained() -> dict[str, dict[str, dict[str, Any]]] | None:
    """``{architecture: {tag: config}}`` as open_clip's ``_PRETRAINED`` (url, hf_hub, quick_gelu, ...)."""
    folder = _package_dir()
    if folder is None or not (folder / "pretrained.py").is_file():
        return None
    try:
        return _parse_pretrained((folder / "pretrained.py").read_text())
    except (OSError, UnicodeDecodeError):
        return None


def _parse_pretrained(source: str) -> dict[str, dict[str, dict[str, Any]]] | None:
    """``_PRETRAINED`` of a ``pretrained.py`` source, or None when its layout is not one this reader knows.

    >>> _parse_pretrained("def _pcfg(url='', hf_hub='', **kw): ...\\n_PRETRAINED = {'RN50': dict(openai=_pcfg('u'))}")
    {'RN50': {'openai': {'url': 'u', 'hf_hub': ''}}}
    """
    names: dict[str, Any] = {}
    params: dict[str, list[str]] = {}
    twins = False
    try:
        for stmt in ast.parse(source).body:
            if isinstance(stmt, ast.FunctionDef):
                params[stmt.name] = [a.arg for a in stmt.args.posonlyargs + stmt.args.args]
            elif (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
                    and stmt.targets[0].id.startswith("_")):
                try:
                    names[stmt.targets[0].id] = _value(stmt.value, names, params)
                except _Unknown:
                    continue  # helpers (a partial of hf_hub_download, ...) the table does not use
            elif "_PRETRAINED" in names and _mutates(stmt, "_PRETRAINED"):
                # newer open_clip ends the table with its QuickGELU twins (2.24 lists them by hand);
                # any other change is a layout this reader does not know
                if ast.unparse(stmt) != "_PRETRAINED.update(_PRETRAINED_quickgelu)":
                    return None
                twins = True
        table = names.get("_PRETRAINED")
        if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
            return None
    except SyntaxError:
        return None
    if twins:  # as open_clip's loop: architectures with QuickGELU tags get "<name>-quickgelu" twins
        quick = {f"{arch}-quickgelu": {tag: copy.deepcopy(cfg) for tag, cfg in tags.items() if cfg.get("quick_gelu")}
                 for arch, tags in table.items()}
        table.update({arch: tags for arch, tags in quick.items() if tags})
    return table


def _imported() -> Any:
    """open_clip when it is imported already (or when its files cannot be read), else None."""
    if "open_clip" in sys.modules or _file_configs() is None or _file_pretrained() is None:
        import open_clip

        return open_clip
    return None


def list_models() -> list[str]:
    """open_clip's architecture names (``open_clip.list_models()``)."""
    oc = _imported()
    return oc.list_models() if oc else list(_file_configs() or {})


def get_model_config(name: str) -> dict[str, Any] | None:
    """An architecture's configuration (``open_clip.get_model_config``), or None when unknown."""
    oc = _imported()
    if oc:
        return oc.get_model_config(name)
    cfg = (_file_configs() or {}).get(name)
    return copy.deepcopy(cfg) if cfg is not None else None


def pretrained_tags(name: str) -> list[str]:
    """The pretrained tags open_clip publishes for an architecture (``list_pretrained_tags_by_model``)."""
    if _imported():
        from open_clip.pretrained import list_pretrained_tags_by_model

        return list(list_pretrained_tags_by_model(name))
    return list((_file_pretrained() or {}).get(name, {}))


def pretrained_cfg(name: str, tag: str) -> dict[str, Any]:
    """Where a tag's weights come from (``get_pretrained_cfg``: ``url``, ``hf_hub``, ``quick_gelu``, ...)."""
    if _imported():
        from open_clip.pretrained import get_pretrained_cfg

        return dict(get_pretrained_cfg(name, tag))
    return copy.deepcopy((_file_pretrained() or {}).get(name, {}).get(tag.lower().replace("-", "_"), {}))
