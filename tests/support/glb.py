"""Reading our ``.glb`` files back in tests: the JSON, the binary chunk and accessors as arrays."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from text4d.io.glb import FLOAT, UNSIGNED_BYTE, UNSIGNED_INT

_DTYPES: dict[int, Any] = {FLOAT: np.float32, UNSIGNED_INT: np.uint32, UNSIGNED_BYTE: np.uint8}


def read_glb(data: bytes) -> tuple[dict[str, Any], bytes]:
    """The JSON and binary chunk of a ``.glb``."""
    magic, version, total = struct.unpack_from("<III", data, 0)
    if magic != 0x46546C67 or version != 2 or total != len(data):
        raise ValueError("not a glTF 2.0 binary file")
    js_len, _ = struct.unpack_from("<II", data, 12)
    gltf = json.loads(data[20:20 + js_len])
    bin_len, _ = struct.unpack_from("<II", data, 20 + js_len)
    return gltf, data[28 + js_len:28 + js_len + bin_len]


def accessor_array(gltf: dict[str, Any], blob: bytes, index: int) -> np.ndarray:
    """Accessor ``index`` of a tightly packed ``.glb`` as an array [count, components] (normalised integers scaled to [0, 1])."""
    acc = gltf["accessors"][index]
    view = gltf["bufferViews"][acc["bufferView"]]
    dtype = _DTYPES[acc["componentType"]]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[acc["type"]]
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    a = np.frombuffer(blob, dtype=dtype, count=acc["count"] * width, offset=start).reshape(acc["count"], width)
    return a.astype(np.float32) / np.iinfo(dtype).max if acc.get("normalized") else a
