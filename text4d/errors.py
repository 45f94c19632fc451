"""User-facing errors.

Every error a user can fix (a wrong path, a bad config key, a corrupt file) is a
:class:`Text4DError`. The CLI prints its message on one line and exits non-zero
instead of showing a traceback, so the message must name the file or key and say
what to do.
"""

from __future__ import annotations

from pathlib import Path


class Text4DError(Exception):
    """Base class for errors the user can act on."""


class ConfigError(Text4DError):
    """Unknown config key, wrong type, or a value outside its valid range."""


class InputError(Text4DError):
    """A missing, unreadable or malformed input file or folder."""


class ModelFileError(Text4DError):
    """A model weight path (given by a config key or CLI flag) is missing or wrong."""


def require_model_folder(path: str | Path, key: str, subfolders: tuple[str, ...], what: str, example: str) -> Path:
    """``path`` as a folder holding ``subfolders`` (a diffusers-format model), else a :class:`ModelFileError`.

    ``what`` names the model in the message ("Zero123", "text-to-video model"); ``example`` is a
    repository the user could clone there, since nothing is ever downloaded for them.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelFileError(f"{what} folder {folder} (from {key}) does not exist; put a diffusers-format {what} there "
                             f"(e.g. git clone {example} {folder}) or fix {key}")
    missing = [d for d in subfolders if not (folder / d).is_dir()]
    if missing:
        raise ModelFileError(f"{what} folder {folder} (from {key}) is missing {', '.join(d + '/' for d in missing)}; "
                             f"point {key} at the folder that holds {', '.join(d + '/' for d in subfolders)}")
    return folder
