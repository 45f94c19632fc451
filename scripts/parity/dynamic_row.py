"""Row 3: the dynamic stage's losses and schedules against DreamGaussian4D's ``main_4d.py``.

``main_4d.GUI.train_step`` runs as it is, with a recording renderer in place of the CUDA Gaussian
rasteriser (shims.RecordingRenderer): every render it asks for is a fixed image leaf, so after its
``loss.backward()`` the gradient on each render says exactly how that render was weighted. Ours
runs ``DynamicStage.step`` with the same kind of recording renderer. Zero123 is replaced on both
sides by the same linear stand-in ``sum(images * G)`` (row 1 compares the real SDS), so its
gradients show the normalisation of the novel-view term. Compared over a whole run: the render
resolution, backgrounds, camera ranges, progress (step ratio) and learning rates; on chosen steps,
the gradients on the reference RGB, alpha and novel renders.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from report import Report
from shims import RecordingRenderer, install_dreamgaussian4d_shims, main_4d_on, on_path

import text4d.stages.dynamic as dynamic_module
from text4d.app.animate import KIND as ANIMATE
from text4d.app.runkind import load
from text4d.gaussians.model import GaussianModel
from text4d.guidance.novel import Zero123Views
from text4d.io.frames import frames_to_views
from text4d.render.splat import RenderOutput
from text4d.stages.dynamic import DynamicConfig

ROW = "dynamic"
FRAMES, VIEWS, ITERS = 3, 2, 500
CHECK_STEPS = (1, 100, 200, 350, 500)


def pattern(size: int, salt: float) -> torch.Tensor:
    """A fixed image [3, size, size] standing for a render (same on both sides for the same size)."""
    return _pattern(size, salt).clone()


@functools.lru_cache(maxsize=64)
def _pattern(size: int, salt: float) -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    return torch.stack([0.5 + 0.4 * torch.sin(6 * x + salt), 0.5 + 0.4 * torch.cos(5 * y - salt), 0.5 + 0.3 * x * y])


def image_size(requested: int, ref_size: int) -> int:
    """The stand-in image's size for a render asked at ``requested`` px: full size at the reference size
    (ours renders reference and novel views in one call there), else a small image (the loss weights
    do not depend on it; the requested size is recorded separately)."""
    return requested if requested == ref_size else 32


def weights(size: int) -> torch.Tensor:
    """G of the linear SDS stand-in ``sum(images * G)``."""
    return pattern(size, 2.0) - 0.5


def inputs(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    rgb = torch.stack([pattern(size, 0.7 * i).permute(1, 2, 0) for i in range(FRAMES)])
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    alpha = torch.stack([((x - 0.1 * i) ** 2 + y**2 < 0.5).float()[..., None] for i in range(FRAMES)])
    return rgb, alpha


class RefGuidance:
    """The linear stand-in for DreamGaussian4D's ``Zero123`` (``get_img_embeds`` / ``train_step``)."""

    def __init__(self):
        self.calls = []
        self.embeddings = None

    def get_img_embeds(self, x):
        return torch.zeros(1, 4), torch.zeros(1, 4, 4, 4)

    def train_step(self, images, vers, hors, radii, step_ratio, **kw):
        self.calls.append({"n": images.shape[0], "size": images.shape[-1], "vers": list(vers), "hors": list(hors),
                           "radii": list(radii), "step_ratio": step_ratio, "kw": kw})
        return (images * weights(images.shape[-1]).to(images)).sum()


class OurGuidance:
    """The same stand-in behind our ``Zero123Views`` (its ``loss`` signature)."""

    def __init__(self, frames: int):
        self.num_references = frames
        self.calls: list[dict[str, Any]] = []

    def loss(self, images, frames, d_el, d_az, d_r, progress, ref_elevation=0.0):
        self.calls.append({"n": images.shape[0], "size": images.shape[-1], "d_el": d_el.tolist(), "d_az": d_az.tolist(),
                           "d_r": d_r.tolist(), "progress": progress})
        return (images * weights(images.shape[-1]).to(images)).sum()


def run(report: Report, dg4d: Path, device: torch.device, fixtures: dict) -> None:
    ref = _reference(dg4d, device)
    ours = _ours(device)
    for key in ("sizes", "bg", "progress"):
        report.compare(ROW, {"sizes": "novel-view render resolution at every step", "bg": "novel-view background (1 = white) at every step",
                             "progress": "progress (step ratio) given to the SDS term at every step"}[key],
                       ours[key], ref[key], atol=1e-12, rtol=0)
    report.compare(ROW, "reference views: background (1 = white) at every step", ours["ref_bg"], ref["ref_bg"], atol=0, rtol=0)
    report.compare(ROW, "novel views per step", ours["n_novel"], ref["n_novel"], atol=0, rtol=0)
    report.compare(ROW, "Δelevation range over the run (DreamGaussian convention: < 0 = above)",
                   [min(ours["vers"]), max(ours["vers"])], [min(ref["vers"]), max(ref["vers"])], atol=1, rtol=0,
                   note="integers drawn uniformly: randint(-30, 30) there, the same interval mirrored here (one degree apart at the ends)")
    report.compare(ROW, "Δazimuth range over the run", [min(ours["hors"]), max(ours["hors"])], [min(ref["hors"]), max(ref["hors"])], atol=0, rtol=0)
    report.compare(ROW, "Δradius over the run (0 in main_4d)", [min(ours["radii"]), max(ours["radii"])], [min(ref["radii"]), max(ref["radii"])], atol=0, rtol=0)
    report.compare(ROW, "position learning rate at every step", ours["lr_means"], ref["lr_means"], atol=0, rtol=1e-9)
    report.compare(ROW, "deformation / grid learning rates at every step", ours["lr_field"], ref["lr_field"], atol=0, rtol=1e-9)
    for step in CHECK_STEPS:
        for name in ("rgb", "alpha", "novel"):
            report.compare(ROW, f"gradient on the {name} renders at step {step}", ours["grads"][step][name], ref["grads"][step][name],
                           atol=1e-12, rtol=1e-5)
    fixtures[f"{ROW}/sizes"] = torch.tensor(ref["sizes"]).float()
    fixtures[f"{ROW}/progress"] = torch.tensor(ref["progress"], dtype=torch.float64)
    fixtures[f"{ROW}/lr_means"] = torch.tensor(ref["lr_means"], dtype=torch.float64)
    fixtures[f"{ROW}/lr_field"] = torch.tensor(ref["lr_field"], dtype=torch.float64)
    for step in CHECK_STEPS:
        for name in ("rgb", "alpha", "novel"):
            fixtures[f"{ROW}/grad_stats_{name}_{step}"] = grad_stats(ref["grads"][step][name])


def _reference(dg4d: Path, device: torch.device) -> dict:
    from omegaconf import OmegaConf

    install_dreamgaussian4d_shims()
    on_path(dg4d)
    import main_4d
    from utils.general_utils import get_expon_lr_func

    opt = OmegaConf.load(dg4d / "configs" / "4d.yaml")
    opt.input, opt.load, opt.batch_size, opt.n_views, opt.iters = None, None, FRAMES, VIEWS, ITERS
    RecordingRenderer.calls = []
    RecordingRenderer.make = lambda cam, bg: _ref_render(cam, bg, opt.ref_size, device)
    with main_4d_on(device, main_4d):
        gui = main_4d.GUI(opt)
        gui.device = device
        rgb, alpha = inputs(opt.ref_size)
        gui.input_img_list = [(rgb[i] * alpha[i] + 1 - alpha[i]).numpy() for i in range(FRAMES)]  # load_input: white bg
        gui.input_mask_list = [alpha[i].numpy() for i in range(FRAMES)]
        gui.guidance_zero123 = RefGuidance()
        gui.prepare_train()
        out: dict[str, Any] = {"sizes": [], "bg": [], "ref_bg": [], "n_novel": [], "progress": [], "vers": [], "hors": [], "radii": [], "grads": {}}
        for step in range(1, ITERS + 1):
            RecordingRenderer.calls = []
            gui.train_step()
            calls = RecordingRenderer.calls
            refs, novel = calls[:FRAMES], calls[FRAMES:]
            g = gui.guidance_zero123.calls[-1]
            out["sizes"].append(novel[0]["width"])
            out["n_novel"].append(g["n"])
            out["progress"].append(g["step_ratio"])
            out["vers"] += g["vers"]
            out["hors"] += g["hors"]
            out["radii"] += g["radii"]
            out["bg"].append(np.mean([c["bg"][0] for c in novel]))
            out["ref_bg"].append(1.0)  # gs_renderer_4d.Renderer(white_background=True), the default bg of every reference render
            assert all(c["bg"] is None for c in refs), "main_4d renders the reference views with the renderer's default background"
            if step in CHECK_STEPS:
                out["grads"][step] = {"rgb": torch.stack([c["image"].grad for c in refs]).cpu(),
                                      "alpha": torch.stack([c["alpha"].grad for c in refs]).cpu(),
                                      "novel": torch.stack([c["image"].grad for c in novel]).reshape(VIEWS, FRAMES, 3, g["size"], g["size"]).transpose(0, 1).cpu()}
    pos = get_expon_lr_func(lr_init=opt.position_lr_init, lr_final=opt.position_lr_final, lr_delay_mult=opt.position_lr_delay_mult,
                            max_steps=opt.position_lr_max_steps)  # x spatial_lr_scale = 1 for a loaded .ply (load_ply)
    field = [get_expon_lr_func(lr_init=i, lr_final=f, lr_delay_mult=opt.deformation_lr_delay_mult, max_steps=opt.position_lr_max_steps)
             for i, f in ((opt.deformation_lr_init, opt.deformation_lr_final), (opt.grid_lr_init, opt.grid_lr_final))]
    steps = gui.renderer.gaussians.lr_steps
    out["lr_means"] = [float(pos(s)) for s in steps]
    out["lr_field"] = [[float(f(s)) for f in field] for s in steps]
    return out


def _ref_render(cam, bg, ref_size, device):
    size, salt = image_size(cam.image_width, ref_size), 0.1 * cam.time
    bgv = 1.0 if bg is None else bg[0]
    image = (pattern(size, salt) * 0.8 + 0.2 * bgv).to(device).requires_grad_(True)
    alpha = pattern(size, salt + 1.0)[:1].to(device).requires_grad_(True)
    return image, alpha


def grad_stats(g: torch.Tensor) -> torch.Tensor:
    """Per render: sum and absolute sum of a gradient [n, ...] (what a weight's scale or sign changes)."""
    g = g.reshape(g.shape[0], -1).double()
    return torch.stack([g.sum(1), g.abs().sum(1)], 1)


class _InOrder(dynamic_module.DynamicStage):
    """Our stage taking its frames in order, as main_4d's loop does (the batch holds every frame)."""

    def _batch(self) -> torch.Tensor:
        return super()._batch().sort().values


class OurRun:
    """Our ``DynamicStage`` on the same inputs, with a recording renderer in place of the rasteriser."""

    def __init__(self, device: torch.device):
        cfg = load(ANIMATE, None, [f"batch_size={FRAMES}", f"n_views={VIEWS}", f"iters={ITERS}", "init_points=50", "backend=torch"])
        self.dyn = DynamicConfig.of(cfg)
        rgb, alpha = inputs(cfg.ref_size)
        views = frames_to_views(rgb, alpha, cfg.radius, cfg.fovy, cfg.elevation)
        self.guidance = OurGuidance(FRAMES)
        # The linear stand-in for Zero123Guidance: its loss and reference count are all a run uses.
        novel = Zero123Views(self.guidance, views.times, n_views=lambda: self.dyn.n_views, sampling=cfg.views)  # type: ignore[arg-type]
        init = GaussianModel.random_ball(50, 0.5, 0, torch.Generator().manual_seed(0))
        self.stage = _InOrder(self.dyn, views, novel=novel, init=init, device=device)
        self.device = device
        self.ref_size = cfg.ref_size
        self.sizes: list[int] = []
        self.leaves: list[RenderOutput] = []
        self.bgs: list[float] = []
        self.lrs: list[dict[str, float]] = []

    def _render(self, splats, cams, bg, **_):
        b, c = cams.viewmats.shape[:2]
        self.sizes.append(cams.width)
        size = image_size(cams.width, self.ref_size)
        img = torch.stack([torch.stack([(pattern(size, 0.1 * i) * 0.8 + 0.2 * float(bg[0])).permute(1, 2, 0)] * c) for i in range(b)])
        alp = torch.stack([torch.stack([pattern(size, 0.1 * i + 1.0)[:1].permute(1, 2, 0)] * c) for i in range(b)])
        out = RenderOutput(img.to(self.device).requires_grad_(True), alp.to(self.device).requires_grad_(True), None, None, None)
        self.leaves.append(out)
        self.bgs.append(float(bg[0]))
        return out

    def step(self) -> dict:
        """One stage step: what it rendered, gave the SDS term, and the gradients on its renders."""
        stage = self.stage
        self.leaves.clear()
        self.bgs.clear()
        self.sizes.clear()
        optimizer = stage.optimizer
        adam_step = optimizer.step

        def recording_step(*args: Any, **kwargs: Any) -> Any:
            self.lrs.append({g["name"]: g["lr"] for g in optimizer.param_groups})
            return adam_step(*args, **kwargs)

        with mock.patch.object(optimizer, "step", recording_step), mock.patch.object(dynamic_module, "render", self._render):
            stage.step()
        first, last = self.leaves[0], self.leaves[-1]
        assert first.rgb.grad is not None and first.alpha.grad is not None and last.rgb.grad is not None
        return {"call": self.guidance.calls[-1], "size": self.sizes[-1], "bg": self.bgs[-1], "ref_bg": self.bgs[0],
                "grads": {"rgb": first.rgb.grad[:, 0].permute(0, 3, 1, 2).cpu(), "alpha": first.alpha.grad[:, 0].permute(0, 3, 1, 2).cpu(),
                          "novel": last.rgb.grad[:, -VIEWS:].permute(0, 1, 4, 2, 3).cpu()}}  # novel: [F, V, 3, H, W]


def _ours(device: torch.device) -> dict:
    run = OurRun(device)
    out: dict[str, Any] = {"sizes": [], "bg": [], "ref_bg": [], "n_novel": [], "progress": [], "vers": [], "hors": [], "radii": [], "grads": {}}
    for step in range(1, ITERS + 1):
        r = run.step()
        g = r["call"]
        out["sizes"].append(r["size"])
        out["n_novel"].append(g["n"])
        out["progress"].append(g["progress"])
        out["vers"] += [-v for v in g["d_el"]]  # in DreamGaussian's sign
        out["hors"] += g["d_az"]
        out["radii"] += g["d_r"]
        out["bg"].append(r["bg"])
        out["ref_bg"].append(r["ref_bg"])
        if step in CHECK_STEPS:
            out["grads"][step] = r["grads"]
    out["lr_means"] = [lr["means"] for lr in run.lrs]
    out["lr_field"] = [[lr["deform"], lr["grid"]] for lr in run.lrs]
    assert len(run.lrs) == ITERS and not math.isnan(out["lr_means"][0])
    return out
