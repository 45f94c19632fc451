"""Standard 3D Gaussian Splatting ``.ply`` files.

Layout (the one the INRIA code, DreamGaussian, LGM and common web viewers use):
``x y z nx ny nz f_dc_0..2 f_rest_0..(3*(K-1)-1) opacity scale_0..2 rot_0..3``
with opacity as a logit, scales as logs, rotations as (w, x, y, z) and
``f_rest`` stored channel-major (all red coefficients, then green, then blue).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement

from text4d.errors import InputError
from text4d.io.atomic import atomic_write

_REST_COUNTS = {0: 0, 3: 1, 8: 2, 15: 3}  # rest coefficients per channel -> SH degree


@dataclass
class PlyGaussians:
    """Raw (pre-activation) Gaussian parameters as stored in a 3DGS ``.ply``.

    Attributes:
        means: [N, 3]; sh: [N, K, 3] (DC first); opacity_logits: [N];
        log_scales: [N, 3]; quats: [N, 4] (w, x, y, z).
    """

    means: np.ndarray
    sh: np.ndarray
    opacity_logits: np.ndarray
    log_scales: np.ndarray
    quats: np.ndarray

    @property
    def sh_degree(self) -> int:
        return int(round(np.sqrt(self.sh.shape[1]))) - 1

    def with_sh_degree(self, degree: int) -> PlyGaussians:
        """The same Gaussians with SH bands up to ``degree``: missing bands are zeros (no view dependence), extra ones dropped.

        Zero bands render exactly like the lower degree, which is how a degree-0 model fills
        layouts that insist on degree 3 (Unity's and Unreal's importers read only that one).
        """
        k = (degree + 1) ** 2
        sh = np.zeros((self.sh.shape[0], k, 3), dtype=self.sh.dtype)
        keep = min(k, self.sh.shape[1])
        sh[:, :keep] = self.sh[:, :keep]
        return PlyGaussians(self.means, sh, self.opacity_logits, self.log_scales, self.quats)


def save_ply(path: str | os.PathLike, g: PlyGaussians) -> None:
    n, k, _ = g.sh.shape
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(3 * (k - 1))]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    rest = g.sh[:, 1:, :].transpose(0, 2, 1).reshape(n, -1)  # channel-major
    columns = np.concatenate(
        [g.means, np.zeros((n, 3)), g.sh[:, 0, :], rest, g.opacity_logits[:, None], g.log_scales, g.quats], axis=1
    ).astype(np.float32)
    data = np.empty(n, dtype=[(name, "f4") for name in names])
    for i, name in enumerate(names):
        data[name] = columns[:, i]
    with atomic_write(path, "wb") as f:
        PlyData([PlyElement.describe(data, "vertex")], text=False).write(f)


def load_ply(path: str | os.PathLike) -> PlyGaussians:
    """Read a 3DGS ``.ply``; a missing, corrupt or non-finite file raises :class:`InputError`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Gaussian file {path} does not exist")
    try:
        ply = PlyData.read(str(path))
        v = ply["vertex"].data
    except Exception as e:  # plyfile raises several unrelated types for truncated/garbled files
        raise InputError(f"{path} is not a readable .ply file ({e})") from e
    names = set(v.dtype.names or ())
    required = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"] + [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)]
    missing = [name for name in required if name not in names]
    if missing:
        raise InputError(f"{path} is not a 3D Gaussian .ply: missing properties {', '.join(missing)}")
    n_rest = len([name for name in names if name.startswith("f_rest_")])
    if n_rest % 3 or n_rest // 3 not in _REST_COUNTS:
        raise InputError(f"{path}: {n_rest} f_rest_* properties do not match SH degree 0..3 (expected 0, 9, 24 or 45)")
    k = 1 + n_rest // 3

    def cols(keys: list[str]) -> np.ndarray:
        return np.stack([np.asarray(v[key], dtype=np.float32) for key in keys], axis=1)

    n = len(v)
    sh = np.zeros((n, k, 3), dtype=np.float32)
    sh[:, 0, :] = cols(["f_dc_0", "f_dc_1", "f_dc_2"])
    if k > 1:
        rest = cols([f"f_rest_{i}" for i in range(n_rest)]).reshape(n, 3, k - 1)
        sh[:, 1:, :] = rest.transpose(0, 2, 1)
    g = PlyGaussians(
        means=cols(["x", "y", "z"]),
        sh=sh,
        opacity_logits=np.asarray(v["opacity"], dtype=np.float32),
        log_scales=cols([f"scale_{i}" for i in range(3)]),
        quats=cols([f"rot_{i}" for i in range(4)]),
    )
    for name in ("means", "sh", "opacity_logits", "log_scales", "quats"):
        bad = ~np.isfinite(getattr(g, name))
        if bad.any():
            rows = np.unique(np.nonzero(bad)[0])
            raise InputError(f"{path}: {len(rows)} Gaussians have NaN/Inf in {name} (first at vertex {rows[0]}); the file is damaged")
    if n == 0:
        raise InputError(f"{path} holds no Gaussians")
    return g
