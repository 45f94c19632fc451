"""Deformed Gaussians -> density grid -> marching cubes -> a cleaned triangle mesh.

The density of a set of Gaussians at x is ``sum_i o_i exp(-1/2 d_i^T Sigma_i^-1 d_i)``
with ``d_i = x - mu_i`` (DreamGaussian's ``extract_fields``). Evaluating it densely
(128^3 points x tens of thousands of Gaussians x 14 frames) would be 10^12 terms,
so it is *splatted* instead: each Gaussian enumerates only the grid points inside
its ``sigmas``-sigma axis-aligned box, as (Gaussian, grid point) pairs, a bounded
number of pairs at a time, and adds its term with one ``index_add_``. All frames
go in the same call (the frame index is part of the flat grid index), so a
14-frame sequence costs one batched pass on the GPU, not 14.

Marching cubes (scikit-image) runs on the CPU; it is cheap at 128^3 (~0.1 s)
and, for shared-topology exports, runs once for the whole clip.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from text4d.errors import InputError
from text4d.render.splat import Splats, quat_scale_to_covar

log = logging.getLogger(__name__)


@dataclass
class Mesh:
    """A triangle mesh, counter-clockwise seen from outside (the rasteriser's and glTF's front faces).

    Attributes:
        verts: world positions.  # [V, 3] float32
        faces: vertex indices.  # [F, 3] int64
    """

    verts: Tensor
    faces: Tensor

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])


def grid_bounds(splats: Splats, sigmas: float = 3.0, min_opacity: float = 0.01, pad: float = 0.02) -> tuple[Tensor, Tensor]:
    """Axis-aligned box [3], [3] holding every visible Gaussian's ``sigmas`` box at every frame.

    One box for the whole clip keeps the grid (hence scale and voxel size) the
    same across frames. ``pad`` (a fraction of the box size) keeps the surface off
    the grid border, where marching cubes would leave it open.
    """
    means = splats.means.reshape(-1, 3)
    keep = splats.opacities.reshape(-1) > min_opacity
    if not bool(keep.any()):
        raise InputError(f"no Gaussian has opacity above {min_opacity}; nothing to mesh (was the run trained?)")
    ext = sigmas * quat_scale_to_covar(splats.quats.reshape(-1, 4)[keep], splats.scales.reshape(-1, 3)[keep]).diagonal(dim1=-2, dim2=-1).clamp_min(0).sqrt()
    low, high = (means[keep] - ext).float(), (means[keep] + ext).float()
    if low.shape[0] > 1000:
        # Quantiles, not min/max: one stray giant Gaussian must not stretch the grid and blur the mesh.
        # (torch.quantile takes at most 2^24 elements: a strided subset is plenty for a 0.1% tail.)
        stride = max(1, low.shape[0] * 3 // (1 << 24) + 1)
        lo, hi = torch.quantile(low[::stride], 0.001, dim=0), torch.quantile(high[::stride], 0.999, dim=0)
    else:
        lo, hi = low.amin(0), high.amax(0)
    size = (hi - lo).max()
    return lo - pad * size, hi + pad * size


def density_grid(
    splats: Splats,  # means [T, N, 3] etc.
    lo: Tensor,  # [3]
    hi: Tensor,  # [3]
    resolution: int = 128,
    sigmas: float = 3.0,
    min_opacity: float = 0.005,
    pair_budget: int | None = None,
) -> Tensor:
    """Density of each frame's Gaussians at the ``resolution^3`` grid points spanning [lo, hi].

    Grid point (i, j, k) sits at ``lo + (i, j, k) * (hi - lo) / (resolution - 1)``.

    Returns:
        [T, R, R, R] float32, indexed [frame, x, y, z].
    """
    means = splats.means if splats.means.ndim == 3 else splats.means.unsqueeze(0)
    t, n = means.shape[:2]
    device = means.device
    r = resolution
    if pair_budget is None:
        pair_budget = (1 << 23) if device.type == "cuda" else (1 << 20)
    opac = splats.opacities.reshape(t * n)
    keep = (opac > min_opacity) & torch.isfinite(means.reshape(-1, 3)).all(-1)
    src = torch.nonzero(keep).squeeze(1)  # flat (frame, gaussian) ids
    grid = torch.zeros(t * r**3, device=device, dtype=torch.float32)
    if src.numel() == 0:
        return grid.view(t, r, r, r)
    mu = means.reshape(-1, 3)[src].float()
    q = splats.quats.reshape(-1, 4)[src].float()
    s = splats.scales.reshape(-1, 3)[src].float().clamp_min(1e-7)
    o = opac[src].float()
    prec = quat_scale_to_covar(q, 1.0 / s)  # R S^-2 R^T = Sigma^-1  [M, 3, 3]
    ext = sigmas * quat_scale_to_covar(q, s).diagonal(dim1=-2, dim2=-1).clamp_min(0).sqrt()  # [M, 3]
    lo, hi = lo.to(device).float(), hi.to(device).float()
    step = (hi - lo) / (r - 1)
    first = torch.ceil((mu - ext - lo) / step).clamp_min(0).long()  # [M, 3] grid index range per Gaussian
    last = torch.floor((mu + ext - lo) / step).clamp_max(r - 1).long()
    size = (last - first + 1).clamp_min(0)
    count = size.prod(-1)
    live = torch.nonzero(count > 0).squeeze(1)
    if live.numel() == 0:
        return grid.view(t, r, r, r)
    mu, prec, o, first, size, count = mu[live], prec[live], o[live], first[live], size[live], count[live]
    frame = src[live] // n
    ends = torch.cumsum(count, 0)
    start = 0
    while start < live.numel():
        base = int(ends[start - 1]) if start else 0
        stop = max(int(torch.searchsorted(ends, base + pair_budget, right=True)), start + 1)
        cnt = count[start:stop]
        g = torch.repeat_interleave(torch.arange(stop - start, device=device), cnt)  # [P] local Gaussian id
        local = torch.arange(g.numel(), device=device) - (torch.cumsum(cnt, 0) - cnt)[g]
        gs = g + start
        sx, sy = size[gs, 0], size[gs, 1]
        ix = first[gs, 0] + local % sx
        rest = local // sx
        iy = first[gs, 1] + rest % sy
        iz = first[gs, 2] + rest // sy
        d = lo + torch.stack([ix, iy, iz], -1).float() * step - mu[gs]  # [P, 3]
        m = (d.unsqueeze(-2) @ prec[gs] @ d.unsqueeze(-1)).reshape(-1)
        val = o[gs] * torch.exp(-0.5 * m)
        grid.index_add_(0, ((frame[gs] * r + ix) * r + iy) * r + iz, val)
        start = stop
    return grid.view(t, r, r, r)


def marching_cubes(grid: Tensor, lo: Tensor, hi: Tensor, level: float) -> Mesh:
    """Iso-surface of one density grid [R, R, R] at ``level``, in world coordinates.

    Raises :class:`InputError` when nothing reaches ``level`` (empty density).
    """
    from skimage.measure import marching_cubes as _mc

    vol = grid.detach().float().cpu().numpy()
    peak = float(vol.max()) if vol.size else 0.0
    if not peak > level:
        raise InputError(f"the density never reaches the mesh threshold (level={level}, highest density {peak:.3g}); lower mesh.level or train the run longer")
    lo_np, hi_np = lo.detach().cpu().double().numpy(), hi.detach().cpu().double().numpy()
    step = (hi_np - lo_np) / (vol.shape[0] - 1)
    verts, faces, _, _ = _mc(vol, level=level, spacing=tuple(step), allow_degenerate=False)
    verts = torch.from_numpy((verts + lo_np).astype(np.float32))
    faces = torch.from_numpy(faces.astype(np.int64))
    return orient_outward(Mesh(verts, faces))


def signed_volume(mesh: Mesh) -> float:
    """Volume enclosed by the mesh, positive when its faces run counter-clockwise seen from outside."""
    v = mesh.verts.double()[mesh.faces]  # [F, 3, 3]
    return float(torch.linalg.det(v).sum() / 6.0)


def orient_outward(mesh: Mesh) -> Mesh:
    """Flip every face if the mesh is inside-out (marching cubes' winding depends on the gradient sign)."""
    if mesh.num_faces and signed_volume(mesh) < 0:
        return Mesh(mesh.verts, mesh.faces[:, [0, 2, 1]])
    return mesh


def face_components(faces: Tensor, num_verts: int) -> Tensor:
    """Connected-component label per face [F] (faces sharing a vertex are connected)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    f = faces.cpu().numpy()
    rows = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
    cols = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
    adj = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(num_verts, num_verts))
    _, labels = connected_components(adj, directed=False)
    return torch.from_numpy(labels[f[:, 0]]).long()


def compact(verts: Tensor, faces: Tensor) -> Mesh:
    """Drop vertices no face uses and renumber the faces."""
    used = torch.zeros(verts.shape[0], dtype=torch.bool)
    used[faces.reshape(-1)] = True
    remap = torch.cumsum(used.long(), 0) - 1
    return Mesh(verts[used], remap[faces])


def clean(mesh: Mesh, min_component: float = 0.05, max_faces: int = 50_000) -> Mesh:
    """Remove floaters and decimate to a face budget.

    Args:
        min_component: components with fewer faces than this fraction of the
            largest one are dropped (stray Gaussians make tiny closed blobs).
        max_faces: quadric decimation (fast-simplification) down to about this
            many faces; 0 keeps every face.
    """
    if mesh.num_faces == 0:
        return mesh
    labels = face_components(mesh.faces, mesh.verts.shape[0])
    sizes = torch.bincount(labels)
    keep = sizes[labels] >= min_component * sizes.max()
    mesh = compact(mesh.verts, mesh.faces[keep])
    if max_faces and mesh.num_faces > max_faces:
        import fast_simplification

        v, f = fast_simplification.simplify(mesh.verts.numpy(), mesh.faces.numpy().astype(np.int32), target_reduction=1.0 - max_faces / mesh.num_faces)
        mesh = compact(torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)), torch.from_numpy(f.astype(np.int64)))
    return orient_outward(mesh)


def vertex_normals(verts: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted unit vertex normals [..., V, 3] of ``verts`` [..., V, 3]."""
    v0, v1, v2 = verts[..., faces[:, 0], :], verts[..., faces[:, 1], :], verts[..., faces[:, 2], :]
    fn = torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)  # [..., F, 3], length = 2 * area
    acc = torch.zeros_like(verts)
    for k in range(3):
        acc.index_add_(-2, faces[:, k].to(verts.device), fn)
    # A vertex no face touches (or a degenerate fan) gets +y rather than NaN: glTF wants unit normals.
    fallback = torch.tensor([0.0, 1.0, 0.0], device=verts.device, dtype=verts.dtype).expand_as(acc)
    length = acc.norm(dim=-1, keepdim=True)
    return torch.where(length > 1e-20, acc / length.clamp_min(1e-20), fallback)
