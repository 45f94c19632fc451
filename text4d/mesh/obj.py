"""Wavefront OBJ sequences for Blender's Stop-motion-OBJ "Mesh Sequence" import.

One frame is ``NAME_000.obj`` + ``NAME_000.mtl`` + ``NAME_000.png`` (what
DreamGaussian4D's ``logs/NAME_meshes/{t:03d}.obj`` export writes, named so the
add-on's file-name pattern picks the frames up in order). Coordinates are
text4d's world frame (y up, the front camera on +z), which is OBJ's usual
convention and Blender's default OBJ import axes, and the same for every frame,
so the sequence neither jumps nor rescales. OBJ counts v from the bottom of the
image, hence ``1 - v`` (see :func:`text4d.render.mesh_raster.texture`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _rows(line: str, a: np.ndarray) -> str:
    """``line`` (a %-template for one row of ``a``) for every row, in a single ``%`` (fast for 10^5 rows)."""
    return (line * a.shape[0]) % tuple(a.reshape(-1).tolist())


def obj_text(verts: np.ndarray, uv: np.ndarray, normals: np.ndarray, faces: np.ndarray, mtl_file: str, material: str) -> str:
    """OBJ source of one textured mesh: verts/normals [V, 3], uv [V, 2] (v from the top), faces [F, 3] 0-based."""
    f = faces.astype(np.int64) + 1
    vt = np.stack([uv[:, 0], 1.0 - uv[:, 1]], -1)
    return (
        f"# text4d mesh: {len(verts)} vertices, {len(faces)} faces\n"
        f"mtllib {mtl_file}\n"
        + _rows("v %.6f %.6f %.6f\n", verts)
        + _rows("vt %.6f %.6f\n", vt)
        + _rows("vn %.5f %.5f %.5f\n", normals)
        + f"usemtl {material}\n"
        + _rows("f %d/%d/%d %d/%d/%d %d/%d/%d\n", np.repeat(f, 3, axis=1))
    )


def mtl_text(material: str, texture_file: str) -> str:
    """A diffuse-textured, non-shiny material (what baked albedo needs)."""
    return f"newmtl {material}\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nNs 0\nd 1\nillum 1\nmap_Kd {texture_file}\n"


def write_obj_frame(folder: Path, stem: str, verts: np.ndarray, uv: np.ndarray, normals: np.ndarray, faces: np.ndarray, png: bytes) -> Path:
    """Write ``stem.obj``, ``stem.mtl`` and ``stem.png`` (already encoded) into ``folder``."""
    (folder / f"{stem}.png").write_bytes(png)
    (folder / f"{stem}.mtl").write_text(mtl_text(stem, f"{stem}.png"))
    path = folder / f"{stem}.obj"
    path.write_text(obj_text(verts, uv, normals, faces, f"{stem}.mtl", stem))
    return path


def encode_png(texture: np.ndarray) -> bytes:
    """uint8 PNG bytes of a float texture [H, W, 3] in [0, 1]."""
    import imageio.v3 as iio

    img = (np.clip(texture, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return iio.imwrite("<bytes>", img, extension=".png")


def frame_stem(name: str, index: int) -> str:
    return f"{name}_{index:03d}"


def sequence_files(folder: str | os.PathLike, name: str) -> list[Path]:
    """The ``.obj`` files of a sequence, in frame order."""
    return sorted(Path(folder).glob(f"{name}_[0-9][0-9][0-9].obj"))
