"""The binary glTF 2.0 container (``.glb``): one JSON chunk and one binary chunk.

Shared by the animated mesh GLB (:mod:`text4d.mesh.glb`) and the Gaussian-splat GLB
(:mod:`text4d.export.gltf_splat`). Written with the standard library (json + struct): the
structure is small and a writer of our own controls alignment and accessor bounds, which the
Khronos validator checks.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
FLOAT, UNSIGNED_INT, UNSIGNED_BYTE = 5126, 5125, 5121
_COMPONENT_TYPES = {np.dtype(np.float32): FLOAT, np.dtype(np.uint32): UNSIGNED_INT, np.dtype(np.uint8): UNSIGNED_BYTE}


class GlbBuilder:
    """Accumulates the binary chunk's 4-byte-aligned buffer views and their accessors."""

    def __init__(self) -> None:
        self.blob = bytearray()
        self.views: list[dict[str, Any]] = []
        self.accessors: list[dict[str, Any]] = []

    def view(self, data: bytes, target: int | None = None) -> int:
        self.blob.extend(b"\0" * (-len(self.blob) % 4))
        view: dict[str, Any] = {"buffer": 0, "byteOffset": len(self.blob), "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        self.blob.extend(data)
        self.views.append(view)
        return len(self.views) - 1

    def accessor(self, a: np.ndarray, kind: str, target: int | None = None, bounds: bool = False, normalized: bool = False) -> int:
        """An accessor over ``a`` (float32, uint32 or uint8 rows); ``bounds`` adds min/max (required for POSITION)."""
        acc: dict[str, Any] = {"bufferView": self.view(np.ascontiguousarray(a).tobytes(), target), "componentType": _COMPONENT_TYPES[a.dtype],
                               "count": int(a.shape[0]), "type": kind}
        if normalized:
            acc["normalized"] = True
        if bounds:
            flat = a.reshape(a.shape[0], -1)
            acc["min"] = [float(x) for x in flat.min(0)]
            acc["max"] = [float(x) for x in flat.max(0)]
        self.accessors.append(acc)
        return len(self.accessors) - 1

    def glb(self, gltf: dict[str, Any]) -> bytes:
        """The ``.glb`` bytes of ``gltf`` (its buffers, views and accessors are filled in from this builder)."""
        self.blob.extend(b"\0" * (-len(self.blob) % 4))
        gltf["buffers"] = [{"byteLength": len(self.blob)}]
        gltf["bufferViews"] = self.views
        gltf["accessors"] = self.accessors
        js = json.dumps(gltf, separators=(",", ":")).encode()
        js += b" " * (-len(js) % 4)
        total = 12 + 8 + len(js) + 8 + len(self.blob)
        return b"".join([struct.pack("<III", 0x46546C67, 2, total), struct.pack("<II", len(js), 0x4E4F534A), js,
                         struct.pack("<II", len(self.blob), 0x004E4942), bytes(self.blob)])

