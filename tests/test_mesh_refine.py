"""Texture refinement: recovers a known texture through the differentiable mesh rasteriser, resumes exactly."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from text4d.mesh.surface import SurfaceGaussians
from text4d.metrics import psnr
from text4d.render.camera import Cameras
from text4d.render.mesh_raster import interpolate, rasterize, texture
from text4d.render.splat import RenderOutput
from text4d.session import clone_state
from text4d.stages.refine import RefineConfig, RefineStage


def _scene(frames: int = 2, size: int = 64):
    """The sample creature (decimated) at ``frames`` times, its UVs, and its true texture at ``size``^2."""
    src = SurfaceGaussians(num_frames=frames, faces=1500)
    c = src.creature
    times = torch.linspace(0, 1, frames)
    verts = c.verts_at(times)[:, src.vert_ids]
    uv = c.uv[src.vert_ids]
    true_tex = F.interpolate(c.texture.permute(2, 0, 1)[None], size=(size, size), mode="area")[0].permute(1, 2, 0)
    return verts, src.faces, uv, true_tex, times


def _target(verts, faces, uv, tex, times):
    """A RenderFn drawing the true textured mesh on black (what Gaussian renders would be)."""

    def fn(cams: Cameras, t: torch.Tensor) -> RenderOutput:
        b, c = cams.batch_shape
        idx = torch.round(t * (len(times) - 1)).long()
        frags = rasterize(verts[idx].repeat_interleave(c, 0), faces, cams.reshape(b * c))
        m = frags.mask
        rgb = texture(tex, interpolate(uv, frags, faces)) * m
        return RenderOutput(rgb.reshape(b, c, *rgb.shape[1:]), m.reshape(b, c, *m.shape[1:]), m.reshape(b, c, *m.shape[1:]))

    return fn


def _stage(iters: int, seed: int = 0) -> tuple[RefineStage, torch.Tensor]:
    verts, faces, uv, true_tex, times = _scene()
    cfg = RefineConfig(iters=iters, lr=0.05, frames_per_step=1, views_per_frame=2, resolution=40, seed=seed)
    grey = torch.full_like(true_tex, 0.5)
    return RefineStage(faces, verts, uv, grey, times, _target(verts, faces, uv, true_tex, times), cfg, radius=1.6), true_tex


def test_refinement_recovers_a_known_texture():
    stage, true_tex = _stage(iters=25)
    cams = Cameras.orbit(torch.tensor([10.0, -20.0]), torch.tensor([30.0, 200.0]), 1.6, 49.1, 48, 48)
    bg = torch.ones(3)

    def score() -> float:
        got = stage.render(cams, 0.0, bg).rgb[0]
        want = stage.target(cams.reshape(1, -1), torch.zeros(1))
        want_rgb = (want.rgb + (1 - want.alpha) * bg)[0]
        return float(psnr(got, want_rgb).mean())

    before = score()
    losses = [stage.step()["loss"] for _ in range(stage.iters)]
    after = score()
    print(f"\nrefinement: PSNR {before:.2f} -> {after:.2f} dB, loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    assert after > before + 3.0
    assert stage.iteration == 25
    tex, _ = stage.result()
    assert tex.shape == (1, *true_tex.shape) and float(tex.min()) >= 0.0 and float(tex.max()) <= 1.0


def test_refinement_resumes_bit_exactly():
    a, _ = _stage(iters=4, seed=3)
    for _ in range(2):
        a.step()
    state = clone_state(a.state_dict())  # Adam's state aliases live moments, as a Session's autosave would copy it
    for _ in range(2):
        a.step()
    b, _ = _stage(iters=4, seed=99)
    b.load_state_dict(state)
    for _ in range(2):
        b.step()
    assert b.iteration == a.iteration == 4
    assert torch.equal(a.textures, b.textures)
