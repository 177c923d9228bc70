"""Exception types. Every error cfviz raises on bad input names the file or argument and the fix."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class CfvizError(Exception):
    """Base class of every error cfviz raises on purpose."""


class DatasetError(CfvizError, ValueError):
    """A data set folder, split file, image or mask is missing or malformed."""


class ModelUnavailableError(CfvizError, RuntimeError):
    """Real weights were asked for and cannot be had (no network, missing folder or file)."""


class TokenNotFoundError(CfvizError, ValueError):
    """A word asked for by token selection is not in the prompt."""


class StoreMismatchError(CfvizError, ValueError):
    """A capture store on disk was written with a different capture configuration."""


class CaptureError(CfvizError, RuntimeError):
    """A capture could not be installed or used as asked (e.g. no layer matched a filter)."""


class ConfigError(CfvizError, ValueError):
    """A setting of a run is out of range, unknown, or cannot be used (a path, a device, a model name).

    ``field`` is the setting's path in :class:`~cfviz.evaluation.config.RunSpec`
    (``"scoring.alpha_seg"``, ``"models.device"``, ``"out_dir"``). The message is a template in
    which ``{field.path}`` marks name settings; ``str()`` writes them as the Python names, and an
    interface phrases them its own way with :meth:`phrase` (the CLI writes ``--alpha-seg``).

    >>> err = ConfigError("{scoring.alpha_seg} must be between 0 and 1, got 2.0", "scoring.alpha_seg")
    >>> str(err)
    'scoring.alpha_seg must be between 0 and 1, got 2.0'
    >>> err.phrase({"scoring.alpha_seg": "--alpha-seg"})
    '--alpha-seg must be between 0 and 1, got 2.0'
    """

    def __init__(self, template: str, field: str | None = None, *, mentions: tuple[str, ...] = ()) -> None:
        self.template = template
        self.field = field
        #: every setting named in the template (the field first); only these marks are replaced,
        #: so braces in user values (a prompt, a path) are left alone
        self.mentions = tuple(dict.fromkeys(([field] if field else []) + list(mentions)))
        super().__init__(self.phrase())

    def phrase(self, names: Mapping[str, str] | None = None) -> str:
        """The message with each mentioned setting written as ``names[path]`` (default: the path)."""
        names = names or {}
        text = self.template
        for path in self.mentions:
            text = text.replace("{" + path + "}", names.get(path, path))
        return text


def did_you_mean(word: str, choices: Sequence[str], n: int = 3) -> str:
    """``"; did you mean 'a' or 'b'?"`` naming the choices closest to ``word`` (case aside), or ``""``.

    >>> did_you_mean("vit-b-32", ["ViT-B-32", "RN50"])
    "; did you mean 'ViT-B-32'?"
    """
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=n, cutoff=0.5)
    if not close:
        lower = {c.lower(): c for c in choices}
        close = [lower[c] for c in difflib.get_close_matches(word.lower(), list(lower), n=n, cutoff=0.5)]
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


class DataRootError(ConfigError, DatasetError):
    """The data folder of a run cannot be read, or (for a generated data set) cannot be written."""


class DataContentError(ConfigError, DatasetError):
    """The data set of a run lacks what the run needs (test images of both kinds, normal training images).

    Found when the data set is listed, before any model loads; ``field`` names the setting that
    asks for what is missing (``"shots"``) or the data set itself (``"root"``).
    """


class WriteError(CfvizError, OSError):
    """A file could not be written: the disk is full, a quota or the file-size limit was reached.

    The message names the file, its folder and how many bytes were written; the destination kept
    what it held before (writes are atomic). It is an :class:`OSError` too (``errno`` is the
    system's), so code that catches those keeps working.
    """
