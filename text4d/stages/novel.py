"""The dynamic stage's pluggable novel-view term.

The reference view pins down what the camera sees; a novel-view term says
what the object should look like from elsewhere. DreamGaussian4D uses Zero123
SDS there; the built-in sample has ground-truth views, so it plugs in
:class:`SupervisedViews`. A term chooses the extra cameras for a batch of
reference images (so the stage can render everything in one rasteriser call)
and then scores those renders. A term with random state of its own (Zero123's
SDS noise) also defines ``state_dict()`` / ``load_state_dict()``; the stage
keeps that in its checkpoints, so a resumed run continues bit-exactly.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from text4d.render.camera import Cameras
from text4d.render.splat import RenderOutput
from text4d.views import Views, resize_images


class NovelViewTerm(Protocol):
    """Extra views per reference image, and a loss on their renders."""

    def cameras(self, times: Tensor, ref_cameras: Cameras, generator: torch.Generator) -> Cameras:
        """Cameras [B, V] for reference images at ``times`` [B] (same size as ``ref_cameras``)."""
        ...

    def loss(self, out: RenderOutput, bg: Tensor, progress: float) -> Tensor:
        """Unweighted loss of the renders ``out`` ([B, V, H, W, ·]) from the last :meth:`cameras`."""
        ...


class SupervisedViews:
    """Novel views with known images (the sample's training views, multi-view captures).

    ``views`` must hold, for every time the stage trains on, the same number of
    images; each step takes ``per_frame`` of them at random for each reference time.
    """

    def __init__(self, views: Views, per_frame: int, alpha_weight: float = 0.1):
        self.views = views
        self.per_frame = per_frame
        self.alpha_weight = alpha_weight
        keys = torch.round(views.times * 1e6).long()
        self._by_time: dict[int, Tensor] = {}
        for key in keys.unique().tolist():
            self._by_time[key] = torch.nonzero(keys == key).flatten()
        counts = {len(ids) for ids in self._by_time.values()}
        if len(counts) != 1:
            raise ValueError(f"every time needs the same number of supervised views, got counts {sorted(counts)}")
        self._chosen: Tensor | None = None
        self._sized: tuple[int, int, Tensor, Tensor] | None = None  # (h, w, rgb, alpha) at render size

    def cameras(self, times: Tensor, ref_cameras: Cameras, generator: torch.Generator) -> Cameras:
        chosen = []
        for t in times.tolist():
            ids = self._by_time.get(round(t * 1e6))
            if ids is None:
                raise ValueError(f"no supervised views at time {t:.4f}")
            pick = torch.randperm(len(ids), generator=generator)[: self.per_frame]
            chosen.append(ids[pick])
        self._chosen = torch.stack(chosen)  # [B, V]
        cams = self.views.cameras[self._chosen.to(self.views.cameras.device)]
        return cams.resized(ref_cameras.width, ref_cameras.height)

    def loss(self, out: RenderOutput, bg: Tensor, progress: float) -> Tensor:
        assert self._chosen is not None, "cameras() must be called before loss()"
        h, w = out.rgb.shape[-3:-1]
        if self._sized is None or self._sized[:2] != (h, w):
            self._sized = (h, w, resize_images(self.views.rgb, h, w), resize_images(self.views.alpha, h, w))
        idx = self._chosen.to(self.views.rgb.device)
        rgb, alpha = self._sized[2][idx], self._sized[3][idx]  # [B, V, h, w, ·]
        target = rgb * alpha + bg * (1.0 - alpha)
        return (out.rgb - target).square().mean() + self.alpha_weight * (out.alpha - alpha).square().mean()

