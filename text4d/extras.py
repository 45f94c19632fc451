"""Optional extras: which ``pip`` extra brings which module, and the one-line error when one is missing.

The core install (``bash scripts/install.sh``) brings the web studio, the mesh and SPZ exports and
the generative models; the desktop window, Ray batches, matting and the CUDA rasteriser are extras a
user adds when needed. Any command that reaches for a module of a missing extra stops with one
line naming the extra and the command that installs it, never a traceback: ``cli.main`` turns a
:class:`ModuleNotFoundError` into :class:`MissingExtra` through :func:`missing_extra`, and code that
runs outside the command's thread (exports in the Session) uses :func:`user_error`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from text4d.errors import Text4DError


@dataclass(frozen=True)
class Extra:
    """One optional dependency group of ``pyproject.toml``."""

    name: str
    purpose: str
    modules: tuple[str, ...]  # top-level import names it provides


EXTRAS: tuple[Extra, ...] = (
    Extra("viewer", "the web studio (--ui viser) and viser scene recordings", ("viser",)),
    Extra("mesh", "the mesh exports (OBJ sequence, animated GLB) and mesh refinement", ("skimage", "scipy", "xatlas", "fast_simplification", "pygltflib")),
    Extra("splat", "the SPZ exports (spz-seq) and the web player (web)", ("gsply",)),
    Extra("video", "Zero123 guidance, text/image-to-video and MotionDirector", ("diffusers", "transformers", "peft", "accelerate")),
    Extra("dpg", "the desktop studio (--ui dpg)", ("dearpygui",)),
    Extra("batch", "text4d batch on Ray", ("ray",)),
    Extra("matting", "foreground matting with an ONNX model (--matting-model)", ("onnxruntime",)),
    Extra("cuda", "the gsplat CUDA rasteriser", ("gsplat",)),
)
_BY_MODULE = {module: extra for extra in EXTRAS for module in extra.modules}


class MissingExtra(Text4DError):
    """A feature needs an optional extra that is not installed."""

    def __init__(self, extra: Extra, module: str):
        self.extra = extra
        self.module = module
        super().__init__(f"the '{extra.name}' extra is not installed (no module {module}); it brings {extra.purpose}: "
                         f"pip install -e '.[{extra.name}]' in the text4d folder")


def missing_extra(error: ImportError) -> MissingExtra | None:
    """The :class:`MissingExtra` behind an import failure, or None when the module belongs to no extra."""
    name = getattr(error, "name", None) or ""
    top = name.split(".")[0]
    extra = _BY_MODULE.get(top)
    return MissingExtra(extra, top) if extra is not None and isinstance(error, ModuleNotFoundError) else None


def user_error(error: BaseException) -> BaseException:
    """``error``, or the one-line :class:`MissingExtra` it stands for."""
    return (missing_extra(error) or error) if isinstance(error, ImportError) else error


def require(name: str) -> None:
    """Raise :class:`MissingExtra` unless every module of extra ``name`` can be imported.

    For checks before any work starts (a run folder, a model load), where failing later would
    waste the user's time.
    """
    extra = next(e for e in EXTRAS if e.name == name)
    for module in extra.modules:
        if importlib.util.find_spec(module) is None:
            raise MissingExtra(extra, module)
