"""User-facing errors.

Every error a user can fix (a wrong path, a bad config key, a corrupt file) is a
:class:`Text4DError`. The CLI prints its message on one line and exits non-zero
instead of showing a traceback, so the message must name the file or key and say
what to do.
"""

from __future__ import annotations


class Text4DError(Exception):
    """Base class for errors the user can act on."""


class ConfigError(Text4DError):
    """Unknown config key, wrong type, or a value outside its valid range."""


class InputError(Text4DError):
    """A missing, unreadable or malformed input file or folder."""


class ModelFileError(Text4DError):
    """A model weight path (given by a config key or CLI flag) is missing or wrong."""
