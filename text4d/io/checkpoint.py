"""Checkpoints as ``<name>.safetensors`` (tensors) + ``<name>.json`` (everything else).

A stage's ``state_dict()`` is a nest of dicts/lists holding tensors, numbers,
strings and (for optimisers) integer keys. We split it into a flat tensor file
and a JSON skeleton where each tensor is replaced by a reference, so loading
never unpickles anything (no ``torch.load`` of untrusted files) and both parts
are human-inspectable. The JSON is written last: a checkpoint whose JSON
exists is complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from text4d.errors import InputError
from text4d.io.atomic import atomic_write, write_json

_TENSOR = "__tensor__"
_INTKEYS = "__intkeys__"
_TUPLE = "__tuple__"


def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = prefix or "root"
        tensors[key] = obj.detach().cpu().contiguous()
        return {_TENSOR: key}
    if isinstance(obj, dict):
        int_keys = bool(obj) and all(isinstance(k, int) for k in obj)
        if not int_keys and not all(isinstance(k, str) for k in obj):
            raise TypeError(f"checkpoint dict keys must be all str or all int at {prefix!r}")
        out = {str(k): _flatten(v, f"{prefix}/{k}", tensors) for k, v in obj.items()}
        return {_INTKEYS: out} if int_keys else out
    if isinstance(obj, (list, tuple)):
        items = [_flatten(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]
        return {_TUPLE: items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint (at {prefix!r})")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if _TENSOR in obj:
            return tensors[obj[_TENSOR]]
        if _INTKEYS in obj:
            return {int(k): _unflatten(v, tensors) for k, v in obj[_INTKEYS].items()}
        if _TUPLE in obj:
            return tuple(_unflatten(v, tensors) for v in obj[_TUPLE])
        return {k: _unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def save_checkpoint(state: dict[str, Any], path_stem: str | os.PathLike) -> Path:
    """Write ``state`` as ``path_stem.safetensors`` + ``path_stem.json``; return the JSON path."""
    stem = Path(path_stem)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "", tensors)
    with atomic_write(stem.with_suffix(".safetensors")) as f:
        f.write(save(tensors))
    json_path = stem.with_suffix(".json")
    write_json(json_path, skeleton)
    return json_path


def load_checkpoint(path_stem: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``.json`` or ``.safetensors`` path or stem)."""
    stem = Path(path_stem)
    if stem.suffix in (".json", ".safetensors"):
        stem = stem.with_suffix("")
    json_path, tensor_path = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    for p in (json_path, tensor_path):
        if not p.exists():
            raise InputError(f"checkpoint file {p} is missing; the checkpoint is incomplete")
    try:
        skeleton = json.loads(json_path.read_text())
        tensors = load_file(str(tensor_path), device=str(device))
        return _unflatten(skeleton, tensors)
    except Exception as e:  # safetensors, json and our skeleton each fail differently on a damaged file
        raise InputError(f"checkpoint {stem} is corrupt ({e}); use an earlier checkpoint") from e
