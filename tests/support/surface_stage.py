"""The built-in creature's animated surface as a splat source for export tests (no training needed).

:class:`~text4d.mesh.surface.SurfaceGaussians` lays one flat Gaussian on each triangle of the
creature and carries it along as the creature moves, so frames differ visibly (what the web
player's scrubber test needs) and the colours are the creature's texture. This wraps it in the
slice of the stage API that the splat exports read: ``num_frames``, ``iteration``,
``clip_times()``, ``ground_truth()`` and ``deformed_raw(t)``.
"""

from __future__ import annotations

import numpy as np
import torch

from text4d.io.ply import PlyGaussians
from text4d.mesh.surface import SurfaceGaussians


class SurfaceStage:
    """Raw 3DGS parameters of :class:`SurfaceGaussians` at any time."""

    iteration = 0

    def __init__(self, num_frames: int = 5, faces: int = 1500, sh_degree: int = 0, seed: int = 0):
        self.surface = SurfaceGaussians(num_frames=num_frames, faces=faces)
        self.num_frames = num_frames
        # Higher SH bands (small, random) exercise the formats' degree-1..3 paths; the surface itself has degree 0.
        k = (sh_degree + 1) ** 2 - 1
        self.rest = np.random.default_rng(seed).normal(0.0, 0.1, (self.surface.faces.shape[0], k, 3)).astype(np.float32)

    def clip_times(self) -> list[float]:
        return self.surface.clip_times()

    def ground_truth(self) -> None:
        return None

    def deformed_raw(self, t: float) -> PlyGaussians:
        s = self.surface.deformed(torch.tensor([t]))
        opac = s.opacities[0].double().clamp(1e-6, 1 - 1e-6)
        sh = np.concatenate([s.sh[0].numpy(), self.rest], axis=1)
        return PlyGaussians(s.means[0].numpy(), sh, torch.logit(opac).float().numpy(), s.scales[0].log().numpy(), s.quats[0].numpy())
