"""An offline transformers ``CLIPTokenizer`` built from the BPE vocabulary that open_clip ships.

Stable Diffusion 2 uses the same byte-level BPE as CLIP (49,408 tokens, start 49406, end 49407)
with ``"!"`` (id 0) as padding. open_clip installs that vocabulary as
``open_clip/bpe_simple_vocab_16e6.txt.gz``, so cfviz can build the tokenizer without a download:
``vocab.json`` and ``merges.txt`` are written once to a cache folder (atomically) and loaded from
there by transformers.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path
from typing import Any

from cfviz.models._cache import cfviz_cache_dir
from cfviz.models._config import model_config

#: Number of BPE merges CLIP uses (49408 tokens = 512 byte tokens + merges + 2 specials).
_N_MERGES = 49152 - 256 - 2
_START, _END = "<|startoftext|>", "<|endoftext|>"


def _bpe_source() -> Path:
    """open_clip's BPE file, found without importing open_clip (its import takes seconds)."""
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("open_clip_torch is not installed; it ships the CLIP BPE vocabulary")
    path = Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall open_clip_torch, which ships it")
    return path


def _byte_alphabet() -> list[str]:
    """The 256 printable characters that stand in for bytes, in CLIP's (GPT-2's) order.

    Printable Latin-1 bytes stand for themselves; the others (controls, space, ...) are mapped
    to code points from 256 upwards, so every token is printable and whitespace-free.

    >>> a = _byte_alphabet(); len(a), a[0], ord(a[-1])
    (256, '!', 323)
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(256 - len(printable))]


def vocabulary_folder(cache_dir: str | Path | None = None) -> Path:
    """Folder holding ``vocab.json`` and ``merges.txt`` derived from open_clip's BPE file.

    The folder name carries a hash of the source file, so a different open_clip vocabulary gets
    its own folder; files are written atomically, so concurrent first calls are safe.

    >>> (vocabulary_folder() / "vocab.json").is_file()
    True
    """
    from cfviz.utils.io import atomic_write_json, atomic_write_text

    source = _bpe_source()
    raw = source.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()[:16]
    folder = Path(cache_dir) if cache_dir is not None else cfviz_cache_dir() / "clip_bpe" / digest
    vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    if vocab_path.is_file() and merges_path.is_file():
        return folder
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
    merges = lines[1 : _N_MERGES + 1]  # line 0 is a version header
    alphabet = _byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m.split()) for m in merges] + [_START, _END]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != 49408:
        raise RuntimeError(f"{source} gave {len(vocab)} CLIP tokens instead of 49408; "
                           "the installed open_clip ships an unexpected BPE vocabulary")
    atomic_write_text(merges_path, "#version: 0.2\n" + "\n".join(merges) + "\n")
    atomic_write_json(vocab_path, vocab, indent=None)
    return folder


def clip_tokenizer(*, pad_token: str = "!", model_max_length: int = 77,
                   cache_dir: str | Path | None = None) -> Any:
    """A transformers ``CLIPTokenizer`` equal to SD2's tokenizer, built offline.

    Parameters
    ----------
    pad_token:
        Padding token; ``"!"`` (id 0) like Stable Diffusion 2, ``"<|endoftext|>"`` like SD1.
    model_max_length:
        Context length (77 for CLIP and Stable Diffusion).
    cache_dir:
        Folder for ``vocab.json``/``merges.txt``; default ``$CFVIZ_CACHE_DIR/clip_bpe/<hash>``.

    Example
    -------
    >>> tok = clip_tokenizer()
    >>> ids = tok(["a photo of a cat"], padding="max_length", max_length=77).input_ids[0]
    >>> ids[0], ids[6], ids[7], len(ids)
    (49406, 49407, 0, 77)
    """
    from transformers import CLIPTokenizer

    folder = vocabulary_folder(cache_dir)
    settings = model_config("sd2_tokenizer")
    settings.update(pad_token=pad_token, model_max_length=int(model_max_length))
    # from_pretrained reads vocab.json + merges.txt in both transformers 4.x and 5.x
    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True, **settings)
