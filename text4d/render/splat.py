"""Differentiable Gaussian splatting behind one function: :func:`render`.

Backends (same maths, same conventions, see ``text4d.render.camera``):
  * ``"torch"``: pure-torch reference (EWA projection, per-pixel front-to-back
    compositing). Runs anywhere; the CPU/CI path and the correctness oracle.
  * ``"gsplat"``: gsplat's CUDA rasteriser; the default on CUDA.
  * ``"inria"``: ``diff_gaussian_rasterization`` when importable (never required).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class Splats:
    """Activated Gaussian parameters, ready to render.

    Leading batch dims ``B...`` (e.g. one deformed copy per time) are shared with
    the cameras' leading dims.

    Attributes:
        means: centres, world space.  # [B..., N, 3]
        quats: rotations as quaternions (w, x, y, z); need not be normalised.  # [B..., N, 4]
        scales: standard deviations along the rotated axes (activated).  # [B..., N, 3]
        opacities: in [0, 1] (activated).  # [B..., N]
        sh: spherical-harmonic colour coefficients, DC first; K = (degree+1)^2.  # [B..., N, K, 3]
    """

    means: Tensor
    quats: Tensor
    scales: Tensor
    opacities: Tensor
    sh: Tensor


@dataclass
class RenderOutput:
    """What every backend returns; C is the camera dim.

    Attributes:
        rgb: colour composited over the background.  # [B..., C, H, W, 3]
        alpha: accumulated opacity.  # [B..., C, H, W, 1]
        depth: expected camera-space z (alpha-weighted mean depth / alpha; 0 where alpha is 0).  # [B..., C, H, W, 1]
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
