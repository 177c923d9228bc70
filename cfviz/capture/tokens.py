"""Token selection: which columns of a cross-attention map to keep, by word or by index.

CLIP's tokenizer splits rare words into several sub-word tokens and prepends a start token, so
the word "scratches" may occupy positions 7 and 8 of the 77-token sequence. A
:class:`TokenSelection` maps each requested label to the positions it occupies in each prompt;
the recorder averages those columns (as DAAM does for sub-tokens), so one label gives one map.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cfviz.errors import TokenNotFoundError

TokenSpec = str | int


@dataclass(frozen=True)
class TokenSelection:
    """Resolved token choice for one or more prompts.

    Attributes
    ----------
    labels:
        One label per selected token: the word as given, or ``"#<i>:<token>"`` for an index.
    prompts:
        The prompts, one per batch row kept by the capture (or a single prompt for all rows).
    token_ids:
        The full token id sequence of each prompt (start token, words, end token, padding).
    columns:
        ``columns[p][k]``: the sequence positions that label ``k`` occupies in prompt ``p``.
    sequence_length:
        Length of the tokenised sequence (the key length of cross-attention, 77 for SD).
    """

    labels: tuple[str, ...]
    prompts: tuple[str, ...]
    token_ids: tuple[tuple[int, ...], ...]
    columns: tuple[tuple[tuple[int, ...], ...], ...]
    sequence_length: int

    def weights(self, device: Any = None) -> Any:
        """Averaging matrix of shape ``(P, L, K)``: ``maps = probs @ W`` keeps and merges columns."""
        import torch

        w = torch.zeros(len(self.prompts), self.sequence_length, len(self.labels), dtype=torch.float32)
        for p, cols_per_label in enumerate(self.columns):
            for k, cols in enumerate(cols_per_label):
                w[p, list(cols), k] = 1.0 / len(cols)
        return w.to(device) if device is not None else w

    def to_json(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "prompts": list(self.prompts),
                "token_ids": [list(t) for t in self.token_ids],
                "columns": [[list(c) for c in cols] for cols in self.columns],
                "sequence_length": self.sequence_length}


def _token_strings(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    return [str(t) for t in tokenizer.convert_ids_to_tokens(list(ids))]


def _encode(tokenizer: Any, text: str, *, special: bool) -> list[int]:
    if special:
        max_len = int(getattr(tokenizer, "model_max_length", 77))
        out = tokenizer(text, padding="max_length", max_length=max_len, truncation=True)
    else:
        out = tokenizer(text, add_special_tokens=False)
    ids = out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out
    return [int(i) for i in ids]


def _find_subsequence(seq: Sequence[int], sub: Sequence[int]) -> list[int]:
    """All positions covered by occurrences of ``sub`` in ``seq``."""
    n = len(sub)
    hits: list[int] = []
    for start in range(len(seq) - n + 1):
        if list(seq[start:start + n]) == list(sub):
            hits.extend(range(start, start + n))
    return hits


def select_tokens(tokenizer: Any, prompts: str | Sequence[str], tokens: Sequence[TokenSpec] | None) -> TokenSelection:
    """Resolve words or indices against the tokenised prompt(s).

    Parameters
    ----------
    tokenizer:
        A Hugging Face tokenizer (``pipe.tokenizer``): callable, with ``convert_ids_to_tokens``.
    prompts:
        One prompt, or one per batch row that the capture keeps.
    tokens:
        Words (every sub-token of every occurrence is averaged) or integer positions in the token
        sequence, where position 0 is the start token (so the first word is at 1). ``None`` keeps
        every position of the sequence (77 maps per layer: large).

    Raises
    ------
    TokenNotFoundError
        A word is not in a prompt; the message lists that prompt's tokens.

    Example
    -------
    >>> from cfviz.models import clip_tokenizer  # doctest: +SKIP
    >>> sel = select_tokens(clip_tokenizer(), "a photo of a bottle with damage", ["damage"])  # doctest: +SKIP
    >>> sel.columns[0][0]  # doctest: +SKIP
    (7,)
    """
    prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompt_list:
        raise TokenNotFoundError("prompts is empty: pass the prompt(s) given to the text encoder")
    id_lists = [_encode(tokenizer, p, special=True) for p in prompt_list]
    length = len(id_lists[0])
    if tokens is None:
        labels = tuple(f"#{i}:{t}" for i, t in enumerate(_token_strings(tokenizer, id_lists[0])))
        columns = tuple(tuple((i,) for i in range(length)) for _ in prompt_list)
        return TokenSelection(labels, tuple(prompt_list), tuple(tuple(i) for i in id_lists), columns, length)
    if isinstance(tokens, (str, int)):
        tokens = [tokens]
    labels: list[str] = []
    per_prompt: list[list[tuple[int, ...]]] = [[] for _ in prompt_list]
    for spec in tokens:
        if isinstance(spec, bool) or not isinstance(spec, (str, int)):
            raise TypeError(f"tokens must hold words (str) or positions (int), got {spec!r}")
        if isinstance(spec, int):
            if not 0 <= spec < length:
                raise TokenNotFoundError(f"token position {spec} is outside the sequence of length {length}")
            labels.append(f"#{spec}:{_token_strings(tokenizer, [id_lists[0][spec]])[0]}")
            for cols in per_prompt:
                cols.append((spec,))
            continue
        word_ids = _encode(tokenizer, spec, special=False)
        if not word_ids:
            raise TokenNotFoundError(f"token word {spec!r} is empty after tokenisation")
        labels.append(spec)
        for p, ids in enumerate(id_lists):
            hits = _find_subsequence(ids, word_ids)
            if not hits:
                shown = _token_strings(tokenizer, ids)
                eos = getattr(tokenizer, "eos_token_id", None)
                end = next((i for i in range(1, len(ids)) if ids[i] == eos), len(shown) - 1)
                raise TokenNotFoundError(
                    f"word {spec!r} (tokens {_token_strings(tokenizer, word_ids)}) is not in prompt "
                    f"{prompt_list[p]!r}; its tokens are {shown[:end + 1]}. Choose one of these words "
                    "or pass an integer position (0 is the start token)."
                )
            per_prompt[p].append(tuple(sorted(set(hits))))
    return TokenSelection(tuple(labels), tuple(prompt_list), tuple(tuple(i) for i in id_lists),
                          tuple(tuple(c) for c in per_prompt), length)
