"""How well an extracted mesh sequence reproduces the Gaussians it came from.

Silhouette IoU (mesh coverage vs Gaussian alpha > 0.5) and PSNR of the textured
mesh vs the Gaussian render, both over white, from the same cameras at the
same frames. Used by the mesh tests and ``text4d bench export``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from text4d.mesh.sequence import MeshSequence
from text4d.mesh.texture import RenderFn
from text4d.metrics import mask_iou, psnr
from text4d.render.camera import Cameras
from text4d.render.mesh_raster import interpolate, rasterize, texture


@torch.no_grad()
def compare(seq: MeshSequence, render_fn: RenderFn, cameras: Cameras, entries: Sequence[int] | None = None) -> dict[str, float]:
    """Mean silhouette IoU, PSNR and the worst IoU over ``entries`` of ``seq`` (default all) x ``cameras`` [C]."""
    entries = list(range(len(seq.frames))) if entries is None else list(entries)
    ious, psnrs = [], []
    for i in entries:
        frame = seq.frames[i]
        device = frame.verts.device
        cams = cameras.to(device)
        out = render_fn(cams.reshape(1, -1), seq.times[i : i + 1])
        g_rgb, g_alpha = out.rgb[0], out.alpha[0]  # [C, H, W, ·], premultiplied on black
        frags = rasterize(frame.verts, frame.faces, cams)
        mask = frags.mask
        m_rgb = texture(frame.texture, interpolate(frame.uv, frags, frame.faces)) * mask
        ious.append(mask_iou(mask, g_alpha))
        psnrs.append(psnr(m_rgb + (1 - mask), g_rgb + (1 - g_alpha)))
    iou, ps = torch.cat(ious), torch.cat(psnrs)
    return {"iou": float(iou.mean()), "iou_min": float(iou.min()), "psnr": float(ps.mean())}
