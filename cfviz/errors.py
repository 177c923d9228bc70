"""Exception types. Every error cfviz raises on bad input names the file or argument and the fix."""

from __future__ import annotations


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
