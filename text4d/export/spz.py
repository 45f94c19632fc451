"""Niantic's SPZ: the compact Gaussian-splat file (about 10x smaller than a ``.ply``), one per frame.

Read by Babylon.js, Spark, Cesium, Open3D, f3d and PlayCanvas' splat-transform. Written through
``gsply`` (the ``splat`` extra): of the SPZ libraries on PyPI it is the maintained one that
installs everywhere (numpy + numba wheels, MIT, regular releases); ``spz`` there is a 0.0.1
source-only Rust build, and Niantic's own C++ library has no PyPI wheel.

We write the gzip container, version 3 (smallest-three rotations), the one every reader above
takes; the newer zstd container (version 4) is still read by fewer of them. SPZ stores the
"RUB" frame (x right, y up, z back: three.js/OpenGL), which is text4d's world frame, so the
Gaussians go in unchanged. Quantisation (what a round trip keeps): positions in 24-bit fixed
point with ``fractional_bits`` bits after the point, opacity as 8-bit alpha, the DC colour in 8
bits over about [-3.3, 3.3], log-scales in 8 bits of 1/16 over [-10, 6], rotations as three
9-bit components, higher SH bands in 8 bits of 1/128 over [-1, 1].
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from text4d.io.ply import PlyGaussians

VERSION = 3
FRACTIONAL_BITS = 12  # Niantic's default: 1/4096 steps, positions up to +-2048
_POSITION_BITS = 23  # magnitude bits of the signed 24-bit fixed point


def fractional_bits(means: np.ndarray) -> int:
    """The position precision that fits these Gaussians: the default 12 bits, fewer for scenes past +-2048 units."""
    extent = float(np.abs(means).max(initial=0.0))
    if extent == 0.0 or not math.isfinite(extent):
        return FRACTIONAL_BITS
    return max(1, min(FRACTIONAL_BITS, _POSITION_BITS - math.ceil(math.log2(extent + 1.0))))


def save_spz(path: str | os.PathLike, g: PlyGaussians) -> None:
    """Write ``g`` (raw 3DGS parameters) as one ``.spz`` file at ``path``."""
    import gsply

    data = gsply.GSData(
        means=np.ascontiguousarray(g.means, dtype=np.float32),
        scales=np.ascontiguousarray(g.log_scales, dtype=np.float32),
        quats=np.ascontiguousarray(g.quats, dtype=np.float32),  # (w, x, y, z), normalised by the writer
        opacities=np.ascontiguousarray(g.opacity_logits, dtype=np.float32),
        sh0=np.ascontiguousarray(g.sh[:, 0, :], dtype=np.float32),
        shN=np.ascontiguousarray(g.sh[:, 1:, :], dtype=np.float32),
    )
    gsply.write_spz(Path(path), data, version=VERSION, fractional_bits=fractional_bits(g.means))


def load_spz(path: str | os.PathLike) -> PlyGaussians:
    """Read a ``.spz`` file back as raw 3DGS parameters (quantised as the module docstring says)."""
    import gsply

    d = gsply.read_spz(Path(path))
    sh = np.concatenate([d.sh0[:, None, :], d.shN.reshape(len(d.means), -1, 3)], axis=1) if d.shN is not None and d.shN.size else d.sh0[:, None, :]
    return PlyGaussians(np.asarray(d.means, np.float32), np.asarray(sh, np.float32), np.asarray(d.opacities, np.float32).reshape(-1),
                        np.asarray(d.scales, np.float32), np.asarray(d.quats, np.float32))
