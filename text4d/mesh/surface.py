"""4D Gaussians laid on the built-in sample's animated surface: a source of known geometry.

One flattened Gaussian per triangle of the creature (centre at the centroid,
two axes in the triangle's plane, the short one along its normal, colour from
the texture), carried along as the creature moves. It exposes the slice of the
stage API the mesh exporter reads (``num_frames``, ``clip_times()``, ``device``,
``cfg.backend``, ``deformed(t)``), so mesh tests and the CPU benchmark can run the whole export
in seconds without training. What it proves: the extraction, following,
baking and writers reproduce a Gaussian model that lies on a surface; it says
nothing about how surface-like a *trained* model is (the benchmark measures
that on a fitted stage).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from text4d.gaussians.quaternion import matrix_to_quat
from text4d.render.mesh_raster import texture
from text4d.render.sh import rgb_to_sh
from text4d.render.splat import Splats
from text4d.samples.creature import Creature
from text4d.timing import clip_frame_times


@dataclass
class _Cfg:
    backend: str = "auto"


def _decimate(verts: Tensor, faces: Tensor, target: int) -> tuple[Tensor, Tensor]:
    """Decimated faces over *original* vertex ids: each kept vertex snaps to its nearest rest vertex,
    so it moves exactly as that skinned vertex does."""
    import fast_simplification
    import numpy as np
    from scipy.spatial import cKDTree

    v, f = fast_simplification.simplify(verts.numpy(), faces.numpy().astype(np.int32), target_reduction=1.0 - target / faces.shape[0])
    _, nearest = cKDTree(verts.numpy()).query(v)
    f = torch.from_numpy(nearest[f.astype(np.int64)]).long()
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    used, f = torch.unique(f, return_inverse=True)
    return f, used


class SurfaceGaussians:
    """Gaussians on the creature's faces at any time (see the module docstring)."""

    def __init__(
        self,
        num_frames: int = 14,
        faces: int = 0,
        seed: int = 0,
        opacity: float = 0.95,
        size: float = 0.9,
        thickness: float = 0.35,
        device: str | torch.device = "cpu",
    ):
        """``faces`` > 0 decimates the creature to about that many faces (fewer, larger Gaussians: fast CPU tests)."""
        self.creature = Creature(seed)
        self.num_frames = num_frames
        self.device = torch.device(device)
        self.cfg = _Cfg()
        self.opacity, self.size, self.thickness = opacity, size, thickness
        c = self.creature
        self.faces, self.vert_ids = c.faces, torch.arange(c.rest_verts.shape[0])
        if faces and faces < c.faces.shape[0]:
            self.faces, self.vert_ids = _decimate(c.rest_verts, c.faces, faces)
        # Colour of each face: the texture at the original vertex nearest its first corner.
        uv = c.uv[self.vert_ids[self.faces]].mean(1)  # [F, 2]
        rgb = texture(c.texture, uv[None, None])[0, 0]  # [F, 3]
        self.sh = rgb_to_sh(rgb).unsqueeze(1).to(self.device)  # [F, 1, 3]

    def clip_times(self) -> list[float]:
        """Every frame's time, as an unretimed stage's clip."""
        return clip_frame_times(self.num_frames)

    @torch.no_grad()
    def deformed(self, t: Tensor) -> Splats:
        """Splats [T, F, ·] at times ``t`` [T]."""
        verts = self.creature.verts_at(t.detach().float().cpu())[:, self.vert_ids].to(self.device)  # [T, V, 3]
        f = self.faces.to(self.device)
        v0, v1, v2 = verts[:, f[:, 0]], verts[:, f[:, 1]], verts[:, f[:, 2]]
        cross = torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)
        area = 0.5 * cross.norm(dim=-1, keepdim=True)  # [T, F, 1]
        n = F.normalize(cross, dim=-1)
        e1 = F.normalize(v1 - v0, dim=-1)
        e2 = torch.linalg.cross(n, e1, dim=-1)
        rot = torch.stack([e1, e2, n], -1)  # columns: the Gaussian's axes in world space
        s = self.size * area.sqrt()
        scales = torch.cat([s, s, self.thickness * s], -1)
        t_n = verts.shape[0]
        opac = torch.full((t_n, f.shape[0]), self.opacity, device=self.device)
        return Splats((v0 + v1 + v2) / 3.0, matrix_to_quat(rot), scales, opac, self.sh.unsqueeze(0).expand(t_n, -1, -1, -1))
