"""UV atlas (xatlas) and a texture baked from multi-view renders of the Gaussians.

Baking gathers per texel rather than splatting per pixel, so no texel is left
with holes between pixels: the UV layout is rasterised once (each texel learns
its triangle and barycentrics, hence its 3D point and normal at every frame),
then each texel looks itself up in every view where it is visible (its depth
matches the mesh's own depth buffer there) and takes the Gaussians' colour,
weighted by ``cos^2`` of the viewing angle and the Gaussians' alpha. Views are
DreamGaussian's 26 (8 azimuths at elevations -45/0/45, plus top and bottom),
optionally at several frames so parts hidden at one frame are seen at another.
Texels no view saw, and the gutter between charts, are filled by push-pull so
bilinear lookups at chart borders never pick up black.

UVs follow :func:`text4d.render.mesh_raster.texture` (v from the image's first
row, as glTF); the OBJ writer flips v.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from text4d.mesh.extract import vertex_normals
from text4d.render.camera import DEFAULT_FOVY, Cameras
from text4d.render.mesh_raster import Backend, interpolate, rasterize
from text4d.render.splat import RenderOutput

log = logging.getLogger(__name__)

# (elevation, azimuth) of DreamGaussian's 26 texture-baking views, in text4d's sign convention,
# ordered so that any prefix covers the object evenly: the six axis views first.
BAKE_ANGLES: tuple[tuple[float, float], ...] = (
    (0.0, 0.0), (0.0, 180.0), (0.0, 90.0), (0.0, -90.0), (89.9, 0.0), (-89.9, 0.0),
    (45.0, 45.0), (45.0, -135.0), (-45.0, 135.0), (-45.0, -45.0),
    (0.0, 45.0), (0.0, -45.0), (0.0, 135.0), (0.0, -135.0),
    (45.0, 0.0), (45.0, 180.0), (45.0, 90.0), (45.0, -90.0), (45.0, -45.0), (45.0, 135.0),
    (-45.0, 0.0), (-45.0, 180.0), (-45.0, 90.0), (-45.0, -90.0), (-45.0, 45.0), (-45.0, -135.0),
)  # fmt: skip

# Renders of the Gaussians: cameras [B, C] at times [B] -> RenderOutput [B, C, H, W, ·] on a black background.
RenderFn = Callable[[Cameras, Tensor], RenderOutput]


@dataclass
class Atlas:
    """A UV unwrap: vertices are split along seams, so index ``vmap`` maps back to the input mesh."""

    vmap: Tensor  # [V'] input vertex of each output vertex
    faces: Tensor  # [F, 3] int64 into the output vertices
    uv: Tensor  # [V', 2] in [0, 1], v from the first image row


def unwrap(verts: Tensor, faces: Tensor, texture_size: int = 1024, padding: int = 2) -> Atlas:
    """xatlas charts packed into a square atlas for ``texture_size`` texels with ``padding`` texels between them."""
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(verts.detach().cpu().numpy().astype(np.float32), faces.cpu().numpy().astype(np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = texture_size
    pack.padding = padding
    pack.bilinear = True
    chart = xatlas.ChartOptions()
    atlas.generate(chart, pack)
    vmap, idx, uv = atlas[0]
    return Atlas(torch.from_numpy(vmap.astype(np.int64)), torch.from_numpy(idx.astype(np.int64)), torch.from_numpy(uv.astype(np.float32)))


def bake_cameras(resolution: int, radius: float = 2.0, fovy: float = DEFAULT_FOVY, views: int = len(BAKE_ANGLES)) -> Cameras:
    """The first ``views`` of :data:`BAKE_ANGLES` as orbit cameras [C] looking at the origin."""
    angles = BAKE_ANGLES[: max(1, views)]
    el = torch.tensor([a[0] for a in angles])
    az = torch.tensor([a[1] for a in angles])
    return Cameras.orbit(el, az, radius, fovy, resolution, resolution)


def texel_fragments(faces: Tensor, uv: Tensor, size: int, backend: Backend = "auto"):
    """Rasterise the UV layout: which triangle covers each texel centre (and where).

    The UV triangles are drawn as 3D points (u, v, 1) seen by a camera at the
    origin with ``K = diag(size, size, 1)``, which maps them to pixels
    ``(u * size, v * size)`` exactly: texel (i, j) is sampled at its centre,
    matching :func:`text4d.render.mesh_raster.texture`.
    """
    device = uv.device
    pts = torch.cat([uv, torch.ones_like(uv[:, :1])], -1)
    K = torch.tensor([[float(size), 0.0, 0.0], [0.0, float(size), 0.0], [0.0, 0.0, 1.0]], device=device)
    cam = Cameras(torch.eye(4, device=device)[None], K[None], size, size)
    return rasterize(pts, faces, cam, backend=backend)


def fill_holes(tex: Tensor, valid: Tensor) -> Tensor:
    """Push-pull fill: texels where ``valid`` [H, W] is False take the average of valid neighbours, coarse to fine."""
    img = tex.permute(2, 0, 1)[None] * valid[None, None]  # [1, C, H, W] premultiplied
    w = valid[None, None].float()
    pyramid = [(img, w)]
    while min(img.shape[-2:]) > 1:
        img = F.avg_pool2d(img, 2, ceil_mode=True)
        w = F.avg_pool2d(w, 2, ceil_mode=True)
        pyramid.append((img, w))
    filled = pyramid[-1][0] / pyramid[-1][1].clamp_min(1e-8)
    for img, w in reversed(pyramid[:-1]):
        up = F.interpolate(filled, size=img.shape[-2:], mode="nearest")
        # Partially covered coarse cells are averages; blend them so seams of the pyramid stay smooth.
        filled = torch.where(w > 0, img + up * (1 - w), up)
    return torch.where(valid[..., None], tex, filled[0].permute(1, 2, 0))


@torch.no_grad()
def bake(
    frame_verts: Tensor,  # [T, V, 3] mesh positions at the frames to bake from
    times: Tensor,  # [T]
    faces: Tensor,  # [F, 3]
    uv: Tensor,  # [V, 2]
    render_fn: RenderFn,
    size: int = 1024,
    view_resolution: int = 512,
    radius: float = 2.0,
    fovy: float = DEFAULT_FOVY,
    depth_tol: float = 0.01,
    views: int = len(BAKE_ANGLES),
    backend: Backend = "auto",
) -> Tensor:
    """Texture [size, size, 3] in [0, 1] holding the Gaussians' colour on the mesh surface."""
    device = frame_verts.device
    faces = faces.to(device)
    tf = texel_fragments(faces, uv.to(device), size, backend)
    ty, tx = torch.nonzero(tf.face_ids[0] >= 0, as_tuple=True)
    cams = bake_cameras(view_resolution, radius, fovy, views).to(device)
    acc = torch.zeros(ty.numel(), 3, device=device)
    wsum = torch.zeros(ty.numel(), device=device)
    for verts, t in zip(frame_verts, times):
        p = interpolate(verts, tf, faces)[0, ty, tx]  # [P, 3] texel points
        n = F.normalize(interpolate(vertex_normals(verts, faces), tf, faces)[0, ty, tx], dim=-1)
        out = render_fn(cams.reshape(1, -1), t.reshape(1).to(device))
        rgb, alpha = out.rgb[0], out.alpha[0]  # [C, H, W, 3], [C, H, W, 1]
        depth = rasterize(verts, faces, cams, backend=backend).depth  # [C, H, W]
        for c in range(cams.batch_shape[0]):
            cam = cams[c]
            pc = p @ cam.viewmats[:3, :3].T + cam.viewmats[:3, 3]
            z = pc[:, 2]
            pix = pc @ cam.Ks.T
            uvp = pix[:, :2] / z.clamp_min(1e-6)[:, None]
            px, py = uvp[:, 0].floor().long(), uvp[:, 1].floor().long()
            inside = (px >= 0) & (px < view_resolution) & (py >= 0) & (py < view_resolution) & (z > 1e-3)
            pxc, pyc = px.clamp(0, view_resolution - 1), py.clamp(0, view_resolution - 1)
            seen = inside & ((z - depth[c, pyc, pxc]).abs() < depth_tol) & (depth[c, pyc, pxc] > 0)
            to_cam = F.normalize(cam.c2w[:3, 3] - p, dim=-1)
            a = alpha[c, pyc, pxc, 0]
            w = (n * to_cam).sum(-1).clamp_min(0).square() * a * seen
            colour = rgb[c, pyc, pxc] / a.clamp_min(1e-3)[:, None]
            acc += w[:, None] * colour.clamp(0, 1)
            wsum += w
    tex = torch.zeros(size, size, 3, device=device)
    valid = torch.zeros(size, size, dtype=torch.bool, device=device)
    seen = wsum > 1e-6
    tex[ty[seen], tx[seen]] = acc[seen] / wsum[seen, None]
    valid[ty[seen], tx[seen]] = True
    log.info("baked %d of %d texels from %d views x %d frames", int(seen.sum()), ty.numel(), cams.batch_shape[0], len(times))
    return fill_holes(tex, valid).clamp(0, 1)
