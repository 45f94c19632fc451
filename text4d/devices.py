"""Devices and dtypes: the one place that decides where and in what precision things run.

Every config has ``device: auto | cpu | cuda | cuda:N`` and the generative parts a precision
(``auto | bf16 | fp16 | fp32``, with MotionDirector's ``no`` meaning fp32). "auto" means a CUDA
device when there is one, and bf16 for frozen networks on a CUDA device that supports it.
Half precision on the CPU is slow and unsupported by several kernels, so it falls back to fp32
with a warning instead of failing deep inside a model.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch

log = logging.getLogger(__name__)

Precision = Literal["auto", "bf16", "fp16", "fp32", "no"]
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "no": torch.float32}


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; anything else as given."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued work (CUDA runs asynchronously): what a wall-clock timing must do first."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compiled(module: torch.nn.Module) -> torch.nn.Module:
    """``torch.compile(module)``, typed as what it is for a module: an ``nn.Module`` (``OptimizedModule``) wrapping it."""
    out = torch.compile(module)
    if not isinstance(out, torch.nn.Module):
        raise TypeError(f"torch.compile returned a {type(out).__name__} for a module")
    return out


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype for frozen networks on ``device`` (see the module docstring)."""
    if precision not in ("auto", *_DTYPES):
        raise ValueError(f"precision must be one of auto, {', '.join(_DTYPES)}; got {precision!r}")
    if device.type != "cuda":
        if _DTYPES.get(precision, torch.float32) != torch.float32:
            log.warning("precision %s needs a CUDA device; running in fp32 on %s", precision, device)
        return torch.float32
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return _DTYPES[precision]
