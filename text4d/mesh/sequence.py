"""A textured mesh per frame from a 4D Gaussian stage, and the OBJ-sequence / GLB writers around it.

Pipeline (after DreamGaussian4D's mesh export, restructured so nothing shared
between frames is done twice):

1. deform the Gaussians to every requested frame in one batched call;
2. one grid box for the clip (same scale and voxel size at every frame);
3. ``topology="shared"`` (default): density grid + marching cubes + clean-up at
   the reference frame only, one xatlas unwrap, vertices carried to the other
   frames by the Gaussians' motion (:mod:`text4d.mesh.follow`), one texture baked
   from several frames; ``topology="per-frame"`` (the original's way): the
   density of all frames in one batched grid call, then marching cubes, clean-up,
   unwrap and bake per frame (OBJ only: glTF morph targets need one topology);
4. optionally refine the texture(s) against renders of the Gaussians
   (:class:`text4d.stages.refine.RefineStage`).

Frames read the stage only through ``stage.deformed(t)`` and
``stage.clip_times()`` (the output clip's frames, retimed or not), so a live
session's frozen copy and a reopened checkpoint export alike.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from text4d.errors import ConfigError, InputError
from text4d.mesh.extract import (
    Mesh,
    clean,
    density_grid,
    grid_bounds,
    marching_cubes,
    vertex_normals,
)
from text4d.mesh.follow import Follow, bind, follow
from text4d.mesh.glb import glb_bytes
from text4d.mesh.obj import encode_png, frame_stem, write_obj_frame
from text4d.mesh.texture import RenderFn, bake, unwrap
from text4d.render.camera import DEFAULT_FOVY, Cameras
from text4d.render.splat import Backend, RenderOutput, Splats, render
from text4d.stages.base import Progress
from text4d.stages.refine import RefineConfig, RefineStage

log = logging.getLogger(__name__)



@dataclass
class MeshConfig:
    """How meshes are extracted, textured and written. Defaults follow DreamGaussian's (128^3, 1024^2, 26 views)."""

    resolution: int = field(default=128, metadata={"min": 16, "max": 1024, "help": "density grid points per axis"})
    level: float = field(default=0.3, metadata={"min": 1e-4, "help": "density iso-level; 0.3 matches alpha-0.5 silhouettes best (DreamGaussian: 1.0)"})
    sigmas: float = field(default=3.0, metadata={"min": 1.0, "max": 6.0, "help": "each Gaussian's reach on the grid"})
    topology: Literal["shared", "per-frame"] = field(default="shared", metadata={"help": "shared: one mesh moved per frame; per-frame: marching cubes per frame (OBJ only)"})
    ref_frame: int = field(default=0, metadata={"min": 0, "help": "frame whose surface the shared mesh is cut from"})
    follow: Follow = field(default="rigid", metadata={"help": "how shared vertices follow the Gaussians"})
    neighbours: int = field(default=16, metadata={"min": 1, "max": 64})
    max_faces: int = field(default=40_000, metadata={"min": 0, "help": "decimate to about this many faces; 0 = keep all"})
    min_component: float = field(default=0.05, metadata={"min": 0.0, "max": 1.0, "help": "drop parts smaller than this fraction of the largest"})
    texture: int = field(default=1024, metadata={"min": 16, "max": 8192, "help": "texture size in texels"})
    bake_resolution: int = field(default=512, metadata={"min": 16, "max": 4096, "help": "render size of each baking view"})
    bake_views: int = field(default=26, metadata={"min": 1, "max": 26, "help": "how many of DreamGaussian's 26 baking views to use"})
    bake_frames: int = field(default=3, metadata={"min": 1, "help": "frames (spread over the clip) the shared texture is baked from"})
    camera_radius: float = field(default=0.0, metadata={"min": 0.0, "help": "baking/refinement camera distance; 0 = fit the object"})
    fovy: float = field(default=DEFAULT_FOVY, metadata={"min": 10.0, "max": 120.0})
    fps: float = field(default=12.0, metadata={"min": 0.1, "help": "GLB playback rate"})
    name: str = "mesh"
    refine: RefineConfig = field(default_factory=RefineConfig)


@dataclass
class MeshFrame:
    """One frame's textured mesh; in a shared-topology sequence ``faces``/``uv``/``texture`` are the same objects."""

    verts: Tensor  # [V, 3]
    normals: Tensor  # [V, 3]
    faces: Tensor  # [F, 3]
    uv: Tensor  # [V, 2], v from the image's first row
    texture: Tensor  # [S, S, 3] in [0, 1]


@dataclass
class MeshSequence:
    frames: list[MeshFrame]
    indices: list[int]  # clip frame index of each entry
    times: Tensor  # [T]
    shared: bool
    timings: dict[str, float] = field(default_factory=dict)


def parse_frames(spec: str | None, num_frames: int) -> list[int]:
    """``"a:b"`` (Python slice, b exclusive), ``"a:b:s"``, ``"i,j,k"`` or None (all) -> frame indices."""
    if spec is None or spec.strip() in ("", ":"):
        return list(range(num_frames))
    try:
        if ":" in spec:
            parts = [int(p) if p.strip() else None for p in spec.split(":")]
            picked = list(range(num_frames))[slice(*parts)]
        else:
            picked = [int(p) for p in spec.split(",")]
    except ValueError:
        raise ConfigError(f"--frames '{spec}' must look like 0:14, 0:14:2 or 0,3,7") from None
    bad = [i for i in picked if not 0 <= i < num_frames]
    if bad or not picked:
        raise ConfigError(f"--frames '{spec}' selects {bad or 'no'} frames outside the clip's 0..{num_frames - 1}")
    return picked


def gaussian_renderer(stage) -> RenderFn:
    """Renders of ``stage``'s deformed Gaussians (cameras [B, C], times [B]) on black, for baking and refinement."""
    backend: Backend = stage.cfg.backend if hasattr(stage.cfg, "backend") else "auto"

    @torch.no_grad()
    def fn(cameras: Cameras, times: Tensor) -> RenderOutput:
        splats = stage.deformed(times)
        return render(splats, cameras.to(splats.means.device), torch.zeros(3, device=splats.means.device), backend=backend)

    return fn


def _slice(splats: Splats, i: int) -> Splats:
    return Splats(*(x[i] for x in (splats.means, splats.quats, splats.scales, splats.opacities, splats.sh)))


def _radius(lo: Tensor, hi: Tensor, cfg: MeshConfig) -> float:
    """Camera distance at which the grid box's bounding sphere fits the view (with 10% margin)."""
    if cfg.camera_radius > 0:
        return cfg.camera_radius
    r = float(torch.maximum(lo.abs(), hi.abs()).norm())
    return 1.1 * r / math.sin(math.radians(cfg.fovy) / 2.0)


def _spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)``, ends included."""
    k = min(k, n)
    return sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})


@torch.no_grad()
def build_sequence(stage, cfg: MeshConfig | None = None, frames: Sequence[int] | None = None, progress: Progress | None = None) -> MeshSequence:
    """Textured meshes of ``stage`` at clip ``frames`` (default all); see the module docstring."""
    cfg = cfg or MeshConfig()
    clip = stage.clip_times()
    n = len(clip)
    indices = list(frames) if frames is not None else list(range(n))
    if cfg.ref_frame >= n:
        raise ConfigError(f"mesh.ref_frame={cfg.ref_frame} is outside the clip's 0..{n - 1}")
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def tick(name: str) -> None:
        nonlocal clock
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        now = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + now - clock
        clock = now

    steps = 4 + (1 if cfg.refine.iters else 0)
    done = 0

    def advance() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, steps)

    device = torch.device(getattr(stage, "device", "cpu"))
    times = torch.tensor([clip[i] for i in indices], dtype=torch.float32, device=device)
    splats = stage.deformed(times)  # [T, N, ·]
    lo, hi = grid_bounds(splats, cfg.sigmas)
    radius = _radius(lo, hi, cfg)
    render_fn = gaussian_renderer(stage)
    tick("deform")
    advance()
    if cfg.topology == "shared":
        ref = _slice(stage.deformed(torch.tensor([clip[cfg.ref_frame]], device=device)), 0)
        grid = density_grid(Splats(*(x[None] for x in (ref.means, ref.quats, ref.scales, ref.opacities, ref.sh))), lo, hi, cfg.resolution, cfg.sigmas)[0]
        tick("density")
        mesh = clean(marching_cubes(grid, lo, hi, cfg.level), cfg.min_component, cfg.max_faces)
        _check_mesh(mesh, cfg)
        tick("marching_cubes")
        advance()
        binding = bind(mesh.verts.to(device), ref, cfg.neighbours)
        verts = follow(mesh.verts.to(device), binding, ref, splats, cfg.follow)  # [T, V, 3]
        normals = vertex_normals(verts, mesh.faces.to(device))
        tick("follow")
        atlas = unwrap(mesh.verts, mesh.faces, cfg.texture)
        vmap, faces, uv = atlas.vmap.to(device), atlas.faces.to(device), atlas.uv.to(device)
        verts, normals = verts[:, vmap], normals[:, vmap]
        tick("unwrap")
        advance()
        picked = _spread(len(indices), cfg.bake_frames)
        tex = bake(verts[picked], times[picked], faces, uv, render_fn, cfg.texture, cfg.bake_resolution, radius, cfg.fovy, depth_tol=_depth_tol(lo, hi, cfg), views=cfg.bake_views)
        tick("bake")
        advance()
        seq = MeshSequence([MeshFrame(verts[i], normals[i], faces, uv, tex) for i in range(len(indices))], indices, times, shared=True, timings=timings)
    elif cfg.topology == "per-frame":
        grids = density_grid(splats, lo, hi, cfg.resolution, cfg.sigmas)
        tick("density")
        advance()
        out = []
        for i in range(len(indices)):
            mesh = clean(marching_cubes(grids[i], lo, hi, cfg.level), cfg.min_component, cfg.max_faces)
            _check_mesh(mesh, cfg)
            tick("marching_cubes")
            atlas = unwrap(mesh.verts, mesh.faces, cfg.texture)
            v = mesh.verts.to(device)[atlas.vmap.to(device)]
            f, uv = atlas.faces.to(device), atlas.uv.to(device)
            normals = vertex_normals(mesh.verts.to(device), mesh.faces.to(device))[atlas.vmap.to(device)]
            tick("unwrap")
            tex = bake(v[None], times[i : i + 1], f, uv, render_fn, cfg.texture, cfg.bake_resolution, radius, cfg.fovy, depth_tol=_depth_tol(lo, hi, cfg), views=cfg.bake_views)
            tick("bake")
            out.append(MeshFrame(v, normals, f, uv, tex))
        advance()
        advance()
        seq = MeshSequence(out, indices, times, shared=False, timings=timings)
    else:
        raise ConfigError(f"mesh.topology must be 'shared' or 'per-frame', got {cfg.topology!r}")
    if cfg.refine.iters:
        seq = refine_sequence(seq, render_fn, cfg, radius)
        tick("refine")
        advance()
    return seq


def _depth_tol(lo: Tensor, hi: Tensor, cfg: MeshConfig) -> float:
    """How far a texel may sit from the visible surface and still count as seen: a few grid cells."""
    return float(3.0 * (hi - lo).max() / (cfg.resolution - 1))


def _check_mesh(mesh: Mesh, cfg: MeshConfig) -> None:
    if mesh.num_faces == 0:
        raise InputError(f"no surface left after clean-up (level={cfg.level}, min_component={cfg.min_component}); lower mesh.level")


def refine_sequence(seq: MeshSequence, render_fn: RenderFn, cfg: MeshConfig, radius: float) -> MeshSequence:
    """Run the refinement stage for ``cfg.refine.iters`` steps and put its textures (and offsets) back."""
    if not seq.shared:
        raise ConfigError("mesh.refine needs mesh.topology=shared (it optimises one mesh over all frames)")
    with torch.enable_grad():
        first = seq.frames[0]
        stage = RefineStage(first.faces, torch.stack([f.verts for f in seq.frames]), first.uv, first.texture, seq.times, render_fn, cfg.refine,
                            radius=radius, fovy=cfg.fovy)
        while stage.iteration < stage.iters:
            stage.step()
    textures, verts = stage.result()
    normals = vertex_normals(verts, seq.frames[0].faces)
    frames = [MeshFrame(verts[i], normals[i], f.faces, f.uv, textures[min(i, len(textures) - 1)]) for i, f in enumerate(seq.frames)]
    return MeshSequence(frames, seq.indices, seq.times, seq.shared, seq.timings)


def write_obj_files(seq: MeshSequence, folder: str | os.PathLike, name: str = "mesh") -> Path:
    """``folder/NAME_000.obj|.mtl|.png`` ... (``folder`` must exist; see :func:`text4d.mesh.export.export_obj_sequence`)."""
    folder = Path(folder)
    png_of: dict[int, bytes] = {}  # a shared texture is encoded once
    for frame, index in zip(seq.frames, seq.indices):
        key = id(frame.texture)
        if key not in png_of:
            png_of[key] = encode_png(frame.texture.cpu().numpy())
        verts, uv, normals, faces = (x.cpu().numpy() for x in (frame.verts, frame.uv, frame.normals, frame.faces))
        write_obj_frame(folder, frame_stem(name, index), verts, uv, normals, faces, png_of[key])
    return folder


def glb_data(seq: MeshSequence, fps: float = 12.0, name: str = "mesh") -> bytes:
    """The bytes of one animated ``.glb`` (morph targets; see :mod:`text4d.mesh.glb`)."""
    if not seq.shared:
        raise ConfigError("GLB export needs mesh.topology=shared: morph targets need every frame to share one mesh")
    first = seq.frames[0]
    verts = torch.stack([f.verts for f in seq.frames]).cpu().numpy()
    normals = torch.stack([f.normals for f in seq.frames]).cpu().numpy()
    return glb_bytes(verts, normals, first.uv.cpu().numpy(), first.faces.cpu().numpy(), encode_png(first.texture.cpu().numpy()), fps=fps, name=name)
