"""Which prompt tokens an evaluation stores: the language words only, or every token of the prompt.

``ExtractionConfig.tokens = "language"`` (the default) stores the cross-attention of the words
M_diff_L averages (``ExtractionConfig.tokens_for(category)``: the [state] word ``"damage"`` by
default), nothing else. ``"all"`` stores them first, under the same labels (M_diff_L reads them by
label), and then every token of the prompt from the start token to the
end token, for per-word figures (:func:`cfviz.viz.word_timestep_grid`, DAAM-style) and the
explorer's token menu. Padding after the end token is not stored.

Labels of the extra tokens: ``"<start>"`` and ``"<end>"`` for CLIP's start- and end-of-text
tokens, ``"#<position>:<token>"`` for the others (``"#5:bottle"``; the position keeps a word
that occurs twice, such as "a", apart, and 0 is the start token as in
:func:`cfviz.capture.tokens.select_tokens`). Categories have prompts of different lengths, so
the store's capture settings record ``["<every prompt token>"]`` rather than each entry's labels;
each entry keeps its own labels (language words first) with its token selection.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from cfviz.evaluation.config import TOKEN_MODES

START_LABEL, END_LABEL = "<start>", "<end>"
#: What the store's capture settings say in place of per-prompt labels (tokens="all").
EVERY_TOKEN = "<every prompt token>"


def end_position(tokenizer: Any, prompt: str) -> int:
    """Position of the prompt's end token in its padded token sequence (the last position if truncated).

    >>> class Tok:
    ...     model_max_length, eos_token_id = 6, 1
    ...     def __call__(self, text, **kw): return {"input_ids": [0, 5, 6, 1, 1, 1]}
    >>> end_position(Tok(), "a b")
    3
    """
    max_len = int(getattr(tokenizer, "model_max_length", 77))
    out = tokenizer(prompt, padding="max_length", max_length=max_len, truncation=True)
    ids = [int(i) for i in (out["input_ids"] if hasattr(out, "keys") else out)]
    eos = getattr(tokenizer, "eos_token_id", None)
    return next((i for i in range(1, len(ids)) if ids[i] == eos), len(ids) - 1)


def token_specs(tokenizer: Any, prompts: Sequence[str], words: Sequence[str], mode: str) -> list[Any]:
    """What to pass as ``capture(tokens=...)``: the language words, then (``"all"``) positions 0..end.

    The prompts of one batch share a category and so a prompt; with different prompts every
    position up to the latest end token is kept.
    """
    if mode == "language":
        return list(words)
    if mode != "all":
        raise ValueError(f"mode must be one of {TOKEN_MODES}, got {mode!r}")
    last = max(end_position(tokenizer, p) for p in prompts)
    return [*words, *range(last + 1)]


def display_label(label: str, start: str = "<|startoftext|>", end: str = "<|endoftext|>") -> str:
    """A capture label of a position made readable: start/end tokens named, word-end marks dropped.

    >>> [display_label(x) for x in ["#0:<|startoftext|>", "#5:bottle</w>", "#8:<|endoftext|>", "damage"]]
    ['<start>', '#5:bottle', '<end>', 'damage']
    """
    if not label.startswith("#") or ":" not in label:
        return label  # a word label (a language word) stays as it is
    pos, text = label[1:].split(":", 1)
    if text == start:
        return START_LABEL
    if text == end:
        return END_LABEL
    for mark in ("</w>", "\u2581"):  # CLIP's word end, SentencePiece's word start
        text = text.replace(mark, "")
    return f"#{pos}:{text}"


def label_prompt_tokens(cache: Any, words: Sequence[str], tokenizer: Any = None) -> Any:
    """Give a ``tokens="all"`` capture readable labels and prompt-independent capture settings (in place).

    Returns ``cache``. Labels after the first end token (a longer prompt of the batch) keep
    their position label.
    """
    sel = cache.tokens
    if sel is None:
        return cache
    start = getattr(tokenizer, "bos_token", None) or "<|startoftext|>"
    end = getattr(tokenizer, "eos_token", None) or "<|endoftext|>"
    labels, seen_end = [], False
    for label in sel.labels:
        shown = display_label(label, start, end)
        if shown == END_LABEL:
            shown = label if seen_end else shown  # only the first end token is "<end>" (labels stay unique)
            seen_end = True
        labels.append(shown)
    cache.tokens = dataclasses.replace(sel, labels=tuple(labels))
    # one value for every category (their language words may differ: language_tokens="object"),
    # so that the store's capture settings match across categories
    cache.settings["tokens"] = [EVERY_TOKEN]
    return cache


def language_words(entry: Any) -> list[str] | None:
    """The language words of a store entry written with ``tokens="all"`` (the labels before
    ``"<start>"``), ``None`` for any other entry (whose recorded tokens are all language words).

    M_diff_L averages these (:func:`cfviz.evaluation.scoring.diffusion_language_maps`).
    """
    recorded = list((entry.meta.get("capture") or {}).get("tokens") or [])
    if EVERY_TOKEN not in recorded:
        return None
    labels = list((entry.meta.get("tokens") or {}).get("labels") or [])
    return labels[:labels.index(START_LABEL)] if START_LABEL in labels else [t for t in recorded if t != EVERY_TOKEN]
