"""Differentiable triangle rasterisation: visibility, barycentrics, attribute interpolation, texturing.

Two passes, as nvdiffrast does it without antialiasing:

1. **Visibility** (not differentiable): which triangle is nearest at each pixel
   centre. The pure-torch path enumerates (triangle, pixel) pairs inside each
   triangle's screen bounding box, tests the three edge functions, and keeps the
   nearest hit per pixel with one ``scatter_reduce(amin)`` over a packed int64
   key ``(depth bits << 32) | triangle``; positive float32 depths order like their
   bit patterns, so the key sorts by depth first and breaks ties by the lower
   triangle id, deterministically. On CUDA with ``nvdiffrast`` importable, its
   hardware rasteriser does this pass instead.
2. **Barycentrics** (differentiable): for the fixed triangle ids, perspective-
   correct barycentrics and depth are recomputed in torch from the projected
   vertices. Gradients therefore reach attributes and textures through
   :func:`interpolate` / :func:`texture`, and vertex positions through the
   barycentrics (the interior term; silhouette-edge gradients, which would need
   an antialiasing or soft-coverage term, are not modelled).

Conventions are those of :mod:`text4d.render.camera`: world-to-camera OpenCV
viewmats, pixel (u, v) covers [u, u+1) x [v, v+1) and is sampled at its centre
(u+0.5, v+0.5). A triangle is front-facing when its vertices run counter-
clockwise seen from outside (right-hand normal pointing at the camera); in the
y-down image that is a negative signed area.

OpenCV -> nvdiffrast clip space (used only by the nvdiffrast path): with camera
coordinates (x, y, z), z > 0 forward, and pixel coordinates u = fx x/z + s y/z + cx,
v = fy y/z + cy, nvdiffrast wants homogeneous clip coordinates whose w is the
depth and whose x/w, y/w span [-1, 1] over the image, y = -1 at its *first*
memory row. Our first row is v = 0 (image top), so no flip is needed:
``x_c = (2 fx x + 2 s y + (2 cx - W) z) / W``, ``y_c = (2 fy y + (2 cy - H) z) / H``,
``z_c = (f+n)/(f-n) z - 2 f n/(f-n)``, ``w_c = z``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from text4d.render.camera import Cameras

log = logging.getLogger(__name__)

Backend = Literal["auto", "torch", "nvdiffrast"]

# Pairs (triangle, candidate pixel) held in memory at once by the torch path. 1M
# pairs cost ~120 MB of temporaries; a single larger triangle is still done whole.
_PAIR_BUDGET = 1 << 20
_MIN_AREA = 1e-12  # twice the pixel area below which a projected triangle covers nothing


@dataclass
class Fragments:
    """Per-pixel result of :func:`rasterize`; N is the broadcast batch of meshes and cameras.

    Attributes:
        face_ids: index into ``faces`` of the visible triangle, -1 for background.  # [N, H, W] int64
        bary: perspective-correct barycentric weights of the triangle's three
            vertices (sum to 1); zeros on background. Differentiable w.r.t. vertices.  # [N, H, W, 3]
        depth: camera-space z of the visible surface; 0 on background.  # [N, H, W]
    """

    face_ids: Tensor
    bary: Tensor
    depth: Tensor

    @property
    def mask(self) -> Tensor:
        """Coverage as float (1 where a triangle is visible).  # [N, H, W, 1]"""
        return (self.face_ids >= 0).unsqueeze(-1).to(self.bary.dtype)


def nvdiffrast_available() -> bool:
    try:
        import nvdiffrast.torch  # noqa: F401
    except ImportError:
        return False
    return True


def project(verts: Tensor, cameras: Cameras) -> tuple[Tensor, Tensor]:
    """World points [N, V, 3] -> pixel coordinates [N, V, 2] and camera depth [N, V]."""
    viewmats, Ks = cameras.viewmats.to(verts.dtype), cameras.Ks.to(verts.dtype)
    cam = verts @ viewmats[:, :3, :3].transpose(-1, -2) + viewmats[:, None, :3, 3]  # [N, V, 3]
    z = cam[..., 2]
    pix = cam @ Ks.transpose(-1, -2)  # [N, V, 3], last column = z
    # Points behind the camera get garbage pixels; their faces are culled by the near plane.
    safe_z = torch.where(z.abs() > 1e-8, z, torch.full_like(z, 1e-8))
    return pix[..., :2] / safe_z[..., None], z


def _broadcast(verts: Tensor, faces: Tensor, cameras: Cameras) -> tuple[Tensor, Cameras]:
    if verts.ndim not in (2, 3) or verts.shape[-1] != 3:
        raise ValueError(f"verts must be [V,3] or [B,V,3], got {tuple(verts.shape)}")
    if faces.ndim != 2 or faces.shape[-1] != 3 or faces.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"faces must be an integer [F,3] tensor, got {tuple(faces.shape)} {faces.dtype}")
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= verts.shape[-2]):
        raise ValueError(f"faces index vertices outside [0, {verts.shape[-2]})")
    if len(cameras.batch_shape) > 1:
        raise ValueError(f"cameras must have batch shape [] or [C], got {tuple(cameras.batch_shape)}")
    if len(cameras.batch_shape) == 0:
        cameras = cameras.reshape(1)
    c = cameras.batch_shape[0]
    verts = verts.unsqueeze(0) if verts.ndim == 2 else verts
    b = verts.shape[0]
    if b != c and b != 1 and c != 1:
        raise ValueError(f"verts batch {b} and cameras batch {c} do not broadcast")
    n = max(b, c)
    cameras = cameras.to(verts.device)
    if c != n:
        cameras = Cameras(cameras.viewmats.expand(n, 4, 4), cameras.Ks.expand(n, 3, 3), cameras.width, cameras.height)
    return verts.expand(n, *verts.shape[1:]), cameras


def rasterize(
    verts: Tensor,  # [V, 3] or [B, V, 3], world space
    faces: Tensor,  # [F, 3] int
    cameras: Cameras,  # batch [] / [C] (or [B] matching verts)
    near: float = 1e-2,
    cull_backfaces: bool = False,
    backend: Backend = "auto",
) -> Fragments:
    """Rasterise triangle meshes into ``cameras``; see the module docstring for the passes.

    ``verts`` [V, 3] is drawn into every camera; ``verts`` [B, V, 3] pairs mesh b
    with camera b (either batch may be 1 and broadcast). Triangles with any vertex
    nearer than ``near`` are dropped whole (no clipping): fine for objects in front
    of the camera, which is all this project draws. ``cull_backfaces`` skips
    triangles seen from behind; for closed meshes it only saves time.

    Returns:
        :class:`Fragments` with leading dim N = max(B, C).
    """
    if near <= 0:
        raise ValueError(f"near must be > 0, got {near}")
    if backend not in ("auto", "torch", "nvdiffrast"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'nvdiffrast', got {backend!r}")
    verts, cameras = _broadcast(verts, faces, cameras)
    faces = faces.to(verts.device).long()
    pix, z = project(verts, cameras)
    use_nv = backend == "nvdiffrast" or (backend == "auto" and verts.is_cuda and nvdiffrast_available())
    with torch.no_grad():
        if use_nv:
            if not verts.is_cuda:
                raise ValueError("backend='nvdiffrast' needs CUDA tensors")
            face_ids = _visibility_nvdiffrast(verts, faces, cameras, near)
        else:
            face_ids = _visibility_torch(pix.detach(), z.detach(), faces, cameras.width, cameras.height, near, cull_backfaces)
        if cull_backfaces and use_nv:
            face_ids = _drop_backfacing(face_ids, pix.detach(), faces)
    bary, depth = _barycentrics(pix, z, faces, face_ids)
    return Fragments(face_ids, bary, depth)


def _signed_area(p0: Tensor, p1: Tensor, p2: Tensor) -> Tensor:
    """Twice the signed area of screen triangles (negative = front-facing in y-down images)."""
    return (p1[..., 0] - p0[..., 0]) * (p2[..., 1] - p0[..., 1]) - (p2[..., 0] - p0[..., 0]) * (p1[..., 1] - p0[..., 1])


def _visibility_torch(pix: Tensor, z: Tensor, faces: Tensor, width: int, height: int, near: float, cull_backfaces: bool) -> Tensor:
    """Nearest triangle id per pixel [N, H, W] (-1 = none) by bounding-box pairs and a packed z-buffer."""
    n = pix.shape[0]
    nf = faces.shape[0]
    device = pix.device
    tri = pix[:, faces]  # [N, F, 3, 2]
    tz = z[:, faces]  # [N, F, 3]
    p0, p1, p2 = tri[..., 0, :], tri[..., 1, :], tri[..., 2, :]
    area = _signed_area(p0, p1, p2)  # [N, F]
    keep = (tz.min(-1).values >= near) & (area.abs() > _MIN_AREA)
    if cull_backfaces:
        keep &= area < 0
    # Pixel centres inside the box: u + 0.5 in [min, max]  <=>  u in [ceil(min - 0.5), floor(max - 0.5)].
    lo = torch.ceil(tri.amin(-2) - 0.5).clamp_min(0)  # [N, F, 2]
    hi = torch.floor(tri.amax(-2) - 0.5)
    hi = torch.minimum(hi, hi.new_tensor([width - 1, height - 1]))
    size = (hi - lo + 1).clamp_min(0)
    keep &= (size > 0).all(-1)
    ids = torch.nonzero(keep.flatten()).squeeze(1)  # flat (image, face) index of candidate triangles
    if ids.numel() == 0:
        return torch.full((n, height, width), -1, dtype=torch.long, device=device)

    # Per-triangle linear forms over the image plane, in coordinates relative to the box corner so
    # float32 keeps its precision: screen barycentrics l_i(x, y) = A_i x + B_i y + C_i (the edge
    # function opposite vertex i over the signed area) and 1/z = D x + E y + G (perspective-correct).
    lo_t = lo.reshape(-1, 2)[ids]  # [T, 2]
    q = tri.reshape(-1, 3, 2)[ids].double() - lo_t.double()[:, None, :]  # [T, 3, 2]
    a = area.flatten()[ids].double()[:, None]
    inv_z = 1.0 / tz.reshape(-1, 3)[ids].double()  # [T, 3]
    nxt, prv = [1, 2, 0], [2, 0, 1]
    A = (q[:, nxt, 1] - q[:, prv, 1]) / a  # [T, 3]
    B = (q[:, prv, 0] - q[:, nxt, 0]) / a
    C = (q[:, nxt, 0] * q[:, prv, 1] - q[:, prv, 0] * q[:, nxt, 1]) / a
    coef = torch.cat([A, B, C, (A * inv_z).sum(-1, keepdim=True), (B * inv_z).sum(-1, keepdim=True), (C * inv_z).sum(-1, keepdim=True)], -1).float()  # [T, 12]

    lo_t = lo_t.long()
    size_t = size.reshape(-1, 2)[ids].long()
    count = size_t[:, 0] * size_t[:, 1]
    image = ids // nf
    face = ids % nf
    zbuf = torch.full((n * height * width,), torch.iinfo(torch.int64).max, dtype=torch.long, device=device)
    ends = torch.cumsum(count, 0)
    start = 0
    while start < ids.numel():
        base = int(ends[start - 1]) if start else 0
        stop = max(int(torch.searchsorted(ends, base + _PAIR_BUDGET, right=True)), start + 1)
        sl = slice(start, stop)
        cnt = count[sl]
        pair_tri = torch.repeat_interleave(torch.arange(stop - start, device=device), cnt)  # [P]
        local = torch.arange(pair_tri.numel(), device=device) - (torch.cumsum(cnt, 0) - cnt)[pair_tri]
        wdt = size_t[sl, 0][pair_tri]
        lx, ly = local % wdt, local // wdt
        c = coef[sl][pair_tri]  # [P, 12]
        x = lx.float()[:, None] + 0.5
        y = ly.float()[:, None] + 0.5
        lam = c[:, 0:3] * x + c[:, 3:6] * y + c[:, 6:9]  # [P, 3]
        # A hair of tolerance: a pixel centre on a shared edge may land in both triangles (the
        # z-buffer picks one) but never in neither, so closed meshes show no pinholes.
        inside = (lam >= -1e-6).all(-1)
        inv_depth = (c[:, 9:10] * x + c[:, 10:11] * y + c[:, 11:12]).squeeze(-1)
        inside &= inv_depth > 0
        sel = pair_tri[inside]
        depth = 1.0 / inv_depth[inside]
        key = (depth.view(torch.int32).long() << 32) | face[sl][sel]
        pixel = (image[sl][sel] * height + lo_t[sl, 1][sel] + ly[inside]) * width + lo_t[sl, 0][sel] + lx[inside]
        zbuf.scatter_reduce_(0, pixel, key, reduce="amin")
        start = stop
    hit = zbuf != torch.iinfo(torch.int64).max
    face_ids = torch.where(hit, zbuf & 0xFFFFFFFF, torch.full_like(zbuf, -1))
    return face_ids.view(n, height, width)


_NV_CONTEXTS: dict[torch.device, object] = {}


def _visibility_nvdiffrast(verts: Tensor, faces: Tensor, cameras: Cameras, near: float) -> Tensor:
    """Nearest triangle id per pixel [N, H, W] from nvdiffrast (clip mapping in the module docstring)."""
    import nvdiffrast.torch as dr

    device = verts.device
    if device not in _NV_CONTEXTS:
        _NV_CONTEXTS[device] = dr.RasterizeCudaContext(device=device)
    h, w = cameras.height, cameras.width
    hp, wp = -(-h // 8) * 8, -(-w // 8) * 8  # nvdiffrast wants multiples of 8; pad right/bottom, crop after
    R = cameras.viewmats[:, :3, :3]
    cam = verts @ R.transpose(-1, -2) + cameras.viewmats[:, None, :3, 3]  # [N, V, 3]
    x, y, z = cam.unbind(-1)
    K = cameras.Ks
    fx, s, cx = K[:, 0, 0, None], K[:, 0, 1, None], K[:, 0, 2, None]
    fy, cy = K[:, 1, 1, None], K[:, 1, 2, None]
    far = max(float(z.max()) * 2.0, near * 10.0)
    clip = torch.stack(
        [
            (2 * fx * x + 2 * s * y + (2 * cx - wp) * z) / wp,
            (2 * fy * y + (2 * cy - hp) * z) / hp,
            (far + near) / (far - near) * z - 2 * far * near / (far - near),
            z,
        ],
        -1,
    ).float().contiguous()
    rast, _ = dr.rasterize(_NV_CONTEXTS[device], clip, faces.int().contiguous(), resolution=[hp, wp])
    ids = rast[:, :h, :w, 3].round().long() - 1  # nvdiffrast stores triangle id + 1, 0 = empty
    # nvdiffrast clips at the near plane; match the torch path, which drops such triangles whole.
    too_near = (z[:, faces].amin(-1) < near)  # [N, F]
    drop = torch.gather(too_near, 1, ids.clamp_min(0).flatten(1)).view_as(ids)
    return torch.where(drop, torch.full_like(ids, -1), ids)


def _drop_backfacing(face_ids: Tensor, pix: Tensor, faces: Tensor) -> Tensor:
    """Backface culling after the fact (nvdiffrast path); same as culling first for closed meshes."""
    area = _signed_area(*pix[:, faces].unbind(-2))  # [N, F]
    back = torch.gather(area >= 0, 1, face_ids.clamp_min(0).flatten(1)).view_as(face_ids)
    return torch.where(back, torch.full_like(face_ids, -1), face_ids)


def _barycentrics(pix: Tensor, z: Tensor, faces: Tensor, face_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Differentiable perspective-correct barycentrics [N, H, W, 3] and depth [N, H, W] for fixed ids."""
    n, h, w = face_ids.shape
    hit = face_ids >= 0
    img, py, px = torch.nonzero(hit, as_tuple=True)
    fid = face_ids[img, py, px]
    vid = faces[fid]  # [P, 3]
    q = pix[img[:, None], vid]  # [P, 3, 2]
    qz = z[img[:, None], vid]  # [P, 3]
    centre = torch.stack([px, py], -1).to(q.dtype) + 0.5  # [P, 2]
    d = q - centre[:, None, :]  # vertices relative to the pixel centre
    # Screen-space weight of vertex i = area of the sub-triangle opposite it / full area.
    nxt, prv = [1, 2, 0], [2, 0, 1]
    e = d[:, nxt, 0] * d[:, prv, 1] - d[:, prv, 0] * d[:, nxt, 1]  # [P, 3]
    lam = e / e.sum(-1, keepdim=True)
    pw = lam / qz
    inv_depth = pw.sum(-1, keepdim=True)
    bary_hit = pw / inv_depth
    bary = pix.new_zeros(n, h, w, 3)
    depth = pix.new_zeros(n, h, w)
    bary = bary.index_put((img, py, px), bary_hit)
    depth = depth.index_put((img, py, px), 1.0 / inv_depth.squeeze(-1))
    return bary, depth


def interpolate(attr: Tensor, fragments: Fragments, faces: Tensor) -> Tensor:
    """Per-pixel attribute from per-vertex ``attr`` [V, D] or [N, V, D]; zeros on background.

    Returns:
        [N, H, W, D], differentiable w.r.t. ``attr`` and (through the barycentrics) vertices.
    """
    n = fragments.face_ids.shape[0]
    if attr.ndim == 2:
        attr = attr.unsqueeze(0)
    if attr.ndim != 3 or attr.shape[0] not in (1, n):
        raise ValueError(f"attr must be [V,D] or [{n},V,D], got {tuple(attr.shape)}")
    faces = faces.to(attr.device).long()
    # Only covered pixels are gathered: background is most of a frame and would cost as much.
    img, py, px = torch.nonzero(fragments.face_ids >= 0, as_tuple=True)
    vid = faces[fragments.face_ids[img, py, px]]  # [P, 3]
    vals = attr[img[:, None] if attr.shape[0] > 1 else 0, vid]  # [P, 3, D]
    hit = (fragments.bary[img, py, px].unsqueeze(-1) * vals).sum(-2)  # [P, D]
    out = attr.new_zeros(*fragments.face_ids.shape, attr.shape[-1])
    return out.index_put((img, py, px), hit)


def texture(uv_image: Tensor, uv: Tensor, padding_mode: Literal["border", "reflection", "zeros"] = "border") -> Tensor:
    """Bilinear lookup of ``uv_image`` [Ht, Wt, C] (or [N, Ht, Wt, C]) at ``uv`` [N, H, W, 2].

    UV convention: u runs left to right and v from the image's *first row* down,
    both over [0, 1] edge to edge (texel centres at (i+0.5)/Wt), as nvdiffrast and
    glTF do. OBJ files count v from the bottom: write ``1 - v`` there.
    Differentiable w.r.t. both the texture and ``uv``.

    Returns:
        [N, H, W, C].
    """
    if uv.ndim != 4 or uv.shape[-1] != 2:
        raise ValueError(f"uv must be [N,H,W,2], got {tuple(uv.shape)}")
    if uv_image.ndim == 3:
        uv_image = uv_image.unsqueeze(0)
    if uv_image.ndim != 4 or uv_image.shape[0] not in (1, uv.shape[0]):
        raise ValueError(f"uv_image must be [Ht,Wt,C] or [{uv.shape[0]},Ht,Wt,C], got {tuple(uv_image.shape)}")
    tex = uv_image.permute(0, 3, 1, 2).expand(uv.shape[0], -1, -1, -1)
    out = F.grid_sample(tex, uv * 2.0 - 1.0, mode="bilinear", padding_mode=padding_mode, align_corners=False)
    return out.permute(0, 2, 3, 1)
