"""3D Gaussians as glTF 2.0: one ``.glb`` per frame with the ``KHR_gaussian_splatting`` extension.

The extension (release candidate at Khronos; read by Cesium, Babylon.js, cgltf, SharpGLTF) puts
the Gaussians on a ``POINTS`` primitive: ``POSITION``, and ``KHR_gaussian_splatting:ROTATION``
(unit quaternions, glTF's x, y, z, w order), ``:SCALE`` (linear, not log), ``:OPACITY`` (the
sigmoid, not the logit) and ``:SH_DEGREE_l_COEF_m`` (the real SH coefficients per degree and
order, RGB each; degree 0 always, each higher degree whole). The extension object names the
``ellipse`` kernel and the ``srgb_rec709_display`` colour space: our Gaussians are fitted to
display-referred sRGB images with the 3DGS forward pass (colour = 0.282095 SH_0 + 0.5), the
very convention the extension defines. All float32, so nothing is quantised.

``COLOR_0`` (the fallback the extension recommends) carries the diffuse colour decoded to
linear RGB, with the opacity as alpha, so a reader that does not know the extension still shows
a coloured point cloud. text4d's world is glTF's frame (y up, the object's front facing +z),
like the mesh GLB, so positions and rotations go in unchanged.

The file is assembled with :mod:`text4d.io.glb`; the JSON passes the extension's published
schema and the Khronos validator (see tests/test_splat_export.py).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from text4d.io.atomic import atomic_write
from text4d.io.glb import ARRAY_BUFFER, GlbBuilder
from text4d.io.ply import PlyGaussians
from text4d.render.sh import SH_C0

EXTENSION = "KHR_gaussian_splatting"
POINTS = 0


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """The sRGB transfer function's inverse (for ``COLOR_0``, which glTF defines as linear)."""
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def splat_glb(g: PlyGaussians, name: str = "text4d") -> bytes:
    """The ``.glb`` bytes of one frame's Gaussians (raw 3DGS parameters)."""
    b = GlbBuilder()
    quats = g.quats / np.linalg.norm(g.quats, axis=1, keepdims=True).clip(1e-12)
    opacity = 1.0 / (1.0 + np.exp(-g.opacity_logits.astype(np.float64)))
    diffuse = np.clip(SH_C0 * g.sh[:, 0, :] + 0.5, 0.0, 1.0)
    color = np.concatenate([srgb_to_linear(diffuse), opacity[:, None]], axis=1)

    def f32(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a, dtype=np.float32)

    attributes: dict[str, int] = {
        "POSITION": b.accessor(f32(g.means), "VEC3", ARRAY_BUFFER, bounds=True),
        "COLOR_0": b.accessor(f32(color), "VEC4", ARRAY_BUFFER),
        f"{EXTENSION}:ROTATION": b.accessor(f32(quats[:, [1, 2, 3, 0]]), "VEC4", ARRAY_BUFFER),  # (w, x, y, z) -> glTF's (x, y, z, w)
        f"{EXTENSION}:SCALE": b.accessor(f32(np.exp(g.log_scales)), "VEC3", ARRAY_BUFFER),
        f"{EXTENSION}:OPACITY": b.accessor(f32(opacity), "SCALAR", ARRAY_BUFFER),
    }
    for degree in range(g.sh_degree + 1):
        for m in range(2 * degree + 1):
            attributes[f"{EXTENSION}:SH_DEGREE_{degree}_COEF_{m}"] = b.accessor(f32(g.sh[:, degree * degree + m, :]), "VEC3", ARRAY_BUFFER)
    primitive: dict[str, Any] = {
        "attributes": attributes,
        "mode": POINTS,
        "extensions": {EXTENSION: {"kernel": "ellipse", "colorSpace": "srgb_rec709_display", "projection": "perspective", "sortingMethod": "cameraDistance"}},
    }
    gltf: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": "text4d"},
        "extensionsUsed": [EXTENSION],
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"name": name, "mesh": 0}],
        "meshes": [{"name": name, "primitives": [primitive]}],
    }
    return b.glb(gltf)


def save_splat_glb(path: str | os.PathLike, g: PlyGaussians) -> None:
    """Write one frame's Gaussians as a ``KHR_gaussian_splatting`` ``.glb`` at ``path``."""
    with atomic_write(path, "wb") as f:
        f.write(splat_glb(g, name=os.path.splitext(os.path.basename(path))[0]))
