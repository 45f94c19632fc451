"""Zero123 SDS as the dynamic (and static) stage's novel-view term.

For each reference image the term draws random orbit cameras around the reference camera
(Δelevation by :func:`elevation_range`, Δazimuth in [-180, 180), Δradius 0, as
DreamGaussian4D) and scores their renders with Zero123 conditioned on the frame that
reference image belongs to (per-frame image conditioning). The loss is the mean over the
renders of Zero123's summed SDS loss, as ``main_4d.py`` weights it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from text4d.guidance.sds import Zero123Guidance
from text4d.render.camera import Cameras, orbit_c2w
from text4d.render.splat import RenderOutput


@dataclass
class ViewSampling:
    """Where the random novel cameras go, relative to the reference camera."""

    min_ver: float = field(default=-30.0, metadata={"min": -90.0, "max": 90.0, "help": "Δelevation range (degrees, > 0 = above)"})
    max_ver: float = field(default=30.0, metadata={"min": -90.0, "max": 90.0})
    max_elevation: float = field(default=80.0, metadata={"min": 0.0, "max": 89.0, "help": "absolute elevation limit"})
    radius_jitter: float = field(default=0.0, metadata={"min": 0.0, "help": "Δradius range ±; 0 as main_4d.py, 0.5 as dg.py"})


def elevation_range(s: ViewSampling, elevation: Tensor | float) -> tuple[Tensor, Tensor]:
    """The Δelevation interval [lo, hi) around a reference view at ``elevation``, as DreamGaussian(4D):
    at least [min_ver, max_ver] of *absolute* elevation stays reachable, and no view goes past
    ±max_elevation ("avoid too large elevation (> 80 or < -80), and make sure it always cover [-30, 30]")."""
    el = torch.as_tensor(elevation, dtype=torch.float32)
    lo = torch.maximum(torch.minimum(torch.full_like(el, s.min_ver), s.min_ver - el), -s.max_elevation - el)
    hi = torch.minimum(torch.maximum(torch.full_like(el, s.max_ver), s.max_ver - el), s.max_elevation - el)
    return lo, hi


def orbit_params(cameras: Cameras) -> tuple[Tensor, Tensor, Tensor]:
    """(elevation, azimuth, radius) [...] of cameras looking at the origin, in our convention."""
    c = cameras.centers
    r = c.norm(dim=-1)
    el = torch.rad2deg(torch.asin((c[..., 1] / r).clamp(-1, 1)))
    az = torch.rad2deg(torch.atan2(c[..., 0], c[..., 2]))
    return el, az, r


class Zero123Views:
    """A :class:`text4d.stages.novel.NovelViewTerm` scoring random novel views with Zero123 SDS.

    Args:
        guidance: a :class:`Zero123Guidance` whose references are the clip's frames.
        frame_times: normalised time of each conditioning frame.  # [F]
        n_views: novel views per reference image (an int, or a callable read every step so a
            live edit of the stage's ``n_views`` applies).
        sampling: the camera ranges.
    """

    def __init__(self, guidance: Zero123Guidance, frame_times: Tensor, n_views: int | Callable[[], int],
                 sampling: ViewSampling | None = None):
        if guidance.num_references != len(frame_times):
            raise ValueError(f"{guidance.num_references} conditioning images but {len(frame_times)} frame times")
        self.guidance = guidance
        self.frame_times = frame_times.float().cpu()
        self.n_views = n_views
        self.sampling = sampling or ViewSampling()
        self._last: dict[str, Tensor] | None = None

    def _views(self) -> int:
        return self.n_views() if callable(self.n_views) else self.n_views

    def cameras(self, times: Tensor, ref_cameras: Cameras, generator: torch.Generator) -> Cameras:
        b, v, s = len(times), self._views(), self.sampling
        ref_cameras = ref_cameras.to("cpu")  # a few 4x4s: inverted on the GPU (cuSOLVER, host syncs) they cost 0.5-2 ms a step
        el0, az0, r0 = orbit_params(ref_cameras)  # [B]
        lo, hi = elevation_range(s, el0)
        u = torch.rand(b, v, generator=generator)
        d_el = torch.floor(lo[:, None] + u * (hi - lo).clamp_min(0)[:, None])  # integer degrees, as randint
        d_az = torch.randint(-180, 180, (b, v), generator=generator).float()
        d_r = (torch.rand(b, v, generator=generator) * 2 - 1) * s.radius_jitter
        c2w = orbit_c2w(el0[:, None] + d_el, az0[:, None] + d_az, r0[:, None] + d_r)  # [B, V, 4, 4]
        frames = torch.cdist(times.float().cpu()[:, None], self.frame_times[:, None]).argmin(dim=1)  # [B]
        self._last = {"frames": frames[:, None].expand(b, v), "d_el": d_el, "d_az": d_az, "d_r": d_r, "ref_el": el0[:, None].expand(b, v)}
        K = ref_cameras.Ks[:, None].expand(b, v, 3, 3)
        return Cameras.from_c2w(c2w, K, ref_cameras.width, ref_cameras.height)

    def state_dict(self) -> dict[str, dict[str, Tensor]]:
        """The guidance's RNG states (the cameras come from the stage's own generator)."""
        return {"guidance": self.guidance.state_dict()}

    def load_state_dict(self, state: dict[str, dict[str, Tensor]]) -> None:
        self.guidance.load_state_dict(state["guidance"])

    def loss(self, out: RenderOutput, bg: Tensor, progress: float) -> Tensor:
        if self._last is None:
            raise RuntimeError("cameras() must be called before loss()")
        last = {k: v.reshape(-1) for k, v in self._last.items()}
        images = out.rgb.reshape(-1, *out.rgb.shape[-3:]).permute(0, 3, 1, 2)  # [B*V, 3, H, W]
        # Zero123's SDS loss is summed over renders; main_4d.py divides it by batch_size * n_views.
        return self.guidance.loss(images, last["frames"], last["d_el"], last["d_az"], last["d_r"], progress,
                                  ref_elevation=last["ref_el"]) / images.shape[0]
