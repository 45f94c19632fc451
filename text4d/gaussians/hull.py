"""Where the object is, from posed images alone: the region all cameras see, and a visual hull.

Posed captures (D-NeRF scenes, the sample's export) come without a point
cloud. Two point-cloud-free starts need to know the scene's extent:

* :func:`scene_sphere` — the largest sphere around the point the cameras look
  at that every training camera sees whole. Random initial points go in its
  bounding cube (as 4DGaussians' random init in a fixed box), and it sizes the
  HexPlane field.
* :func:`visual_hull` — voxels of that cube whose projection falls inside the
  foreground masks of (almost) every view that sees them. Each image of a
  monocular dynamic capture is taken at its own time, so a strict
  intersection would carve away moving limbs; ``min_fraction`` < 1 keeps a
  voxel that a few views disagree with. Colours are the mean image colour over
  the views that agree.

Projection follows ``text4d.render.camera``: OpenCV world-to-camera
``viewmats``, pixel centres at +0.5 (``grid_sample`` with
``align_corners=False`` samples exactly there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from text4d.render.camera import Cameras
from text4d.views import Views


def scene_sphere(cameras: Cameras) -> tuple[Tensor, float]:
    """Centre [3] (the point nearest to all optical axes) and radius of the sphere every camera sees whole."""
    c2w = cameras.c2w.reshape(-1, 4, 4).double()
    origins, axes = c2w[:, :3, 3], F.normalize(c2w[:, :3, 2], dim=-1)  # [M, 3]
    # Least squares: sum over cameras of (I - a a^T)(x - o) = 0.
    proj = torch.eye(3, dtype=c2w.dtype) - axes[:, :, None] * axes[:, None, :]  # [M, 3, 3]
    lhs, rhs = proj.sum(0), (proj @ origins[:, :, None]).sum(0)
    centre = torch.linalg.lstsq(lhs, rhs).solution[:, 0] if torch.linalg.matrix_rank(lhs) == 3 else origins.new_zeros(3)
    Ks = cameras.Ks.reshape(-1, 3, 3).double()
    half_fov = torch.minimum(torch.atan(0.5 * cameras.width / Ks[:, 0, 0]), torch.atan(0.5 * cameras.height / Ks[:, 1, 1]))
    to_centre = centre - origins
    dist = to_centre.norm(dim=-1)
    off_axis = torch.acos((F.normalize(to_centre, dim=-1) * axes).sum(-1).clamp(-1.0, 1.0))
    radius = (dist * torch.sin((half_fov - off_axis).clamp_min(0.0))).min()
    if radius <= 0:
        raise ValueError("the training cameras do not all see one common region; pass the scene radius explicitly")
    return centre.float(), float(radius)


def project(points: Tensor, cameras: Cameras) -> tuple[Tensor, Tensor]:
    """Pixel coordinates [M, P, 2] of ``points`` [P, 3] in cameras [M], and depth [M, P]."""
    view = cameras.viewmats.reshape(-1, 4, 4)
    cam = points @ view[:, :3, :3].transpose(1, 2) + view[:, None, :3, 3]  # [M, P, 3]
    Ks = cameras.Ks.reshape(-1, 3, 3)
    z = cam[..., 2]
    xy = cam[..., :2] / z.clamp_min(1e-8)[..., None]
    uv = xy * torch.stack([Ks[:, 0, 0], Ks[:, 1, 1]], -1)[:, None] + torch.stack([Ks[:, 0, 2], Ks[:, 1, 2]], -1)[:, None]
    return uv, z


def visual_hull(
    views: Views,
    centre: Tensor,
    half_size: float,
    resolution: int = 64,
    min_fraction: float = 0.9,
    threshold: float = 0.5,
    chunk: int = 16,
) -> tuple[Tensor, Tensor, float]:
    """Occupied voxel centres [K, 3], their mean colour [K, 3], and the voxel size.

    A voxel of the cube ``centre ± half_size`` (``resolution``^3 cells) is kept
    when at least ``min_fraction`` of the views that see it (in front of the
    camera, inside the image) have alpha > ``threshold`` there.
    """
    step = 2.0 * half_size / resolution
    axis = (torch.arange(resolution, dtype=torch.float32) + 0.5) * step - half_size
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3) + centre.float().cpu()  # [P, 3]
    n_points = grid.shape[0]
    seen = torch.zeros(n_points)
    covered = torch.zeros(n_points)
    colour = torch.zeros(n_points, 3)
    views = views.to("cpu")
    size = torch.tensor([views.width, views.height], dtype=torch.float32)
    for start in range(0, len(views), chunk):
        part = views[start : start + chunk]
        uv, z = project(grid, part.cameras)  # [m, P, 2], [m, P]
        g = 2.0 * uv / size - 1.0
        inside = (z > 0) & (g.abs() <= 1.0).all(-1)  # [m, P]
        images = torch.cat([part.rgb, part.alpha], -1).permute(0, 3, 1, 2)  # [m, 4, H, W]
        sampled = F.grid_sample(images, g[:, :, None], mode="bilinear", align_corners=False)[..., 0]  # [m, 4, P]
        fg = inside & (sampled[:, 3] > threshold)
        seen += inside.float().sum(0)
        covered += fg.float().sum(0)
        colour += (sampled[:, :3] * fg[:, None]).sum(0).T
    keep = (covered >= min_fraction * seen) & (seen >= 0.5 * len(views)) & (covered > 0)
    return grid[keep], colour[keep] / covered[keep, None], step


def sample_in_voxels(centres: Tensor, colours: Tensor, voxel: float, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` points [n, 3] spread uniformly over the voxels at ``centres`` [K, 3], with their colours [n, 3]."""
    if centres.shape[0] == 0:
        raise ValueError("the visual hull is empty")
    pick = torch.randint(centres.shape[0], (n,), generator=generator) if n > centres.shape[0] else torch.randperm(centres.shape[0], generator=generator)[:n]
    jitter = (torch.rand(n, 3, generator=generator) - 0.5) * voxel
    return centres[pick] + jitter, colours[pick]


def random_in_cube(centre: Tensor, half_size: float, n: int, generator: torch.Generator) -> Tensor:
    """``n`` points [n, 3] uniform in the cube ``centre ± half_size``."""
    return centre.float().cpu() + (torch.rand(n, 3, generator=generator) * 2.0 - 1.0) * half_size


__all__ = ["project", "random_in_cube", "sample_in_voxels", "scene_sphere", "visual_hull"]
