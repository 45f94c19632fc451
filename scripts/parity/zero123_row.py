"""Row 1: Zero123 SDS guidance against DreamGaussian4D's ``guidance/zero123_utils.py`` + ``zero123.py``.

Both sides load the same saved random-weight folder (``stable-zero123-diffusers`` and
``zero123-xl-diffusers`` layouts, as ashawkey's conversions that DreamGaussian4D loads). Compared:

* camera conventions: DreamGaussian's ``orbit_camera`` against ours for the same (elevation, azimuth, radius);
* image conditioning: CLIP pixel values and embeddings, the reference ("concat") latents;
* the camera embedding for the same (Δelevation, Δazimuth, Δradius) and the projected conditioning;
* the UNet's inputs and outputs (cond/uncond batch, timesteps), the SDS loss and its gradient on
  the renders, for one fixed noise draw (both RNG streams seeded alike);
* the noise level over a 500-iteration run.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from report import Report
from shims import install_scipy_rotation_shim, install_torchvision_shim, on_path, pil_clip_processor

from text4d.guidance.random_models import build_zero123, save_zero123
from text4d.guidance.sds import SDSConfig, Zero123Guidance, camera_embedding, timesteps
from text4d.guidance.zero123 import load_zero123
from text4d.render.camera import orbit_c2w

ROW = "zero123"


def reference_images(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth RGBA test frames [n, size, size, 3] / [n, size, size, 1]: a coloured disc that moves."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    rgb, alpha = [], []
    for i in range(n):
        c = torch.rand(3, 3, generator=g)
        cx = 0.3 * np.sin(i)
        r2 = (xs - cx) ** 2 + ys**2
        a = torch.sigmoid((0.45 - r2.sqrt()) * 40)[..., None]
        img = c[0] * (0.5 + 0.5 * torch.cos(3 * xs))[..., None] + c[1] * (0.5 + 0.5 * torch.sin(4 * ys))[..., None]
        rgb.append((img / 2).clamp(0, 1))
        alpha.append(a)
    return torch.stack(rgb), torch.stack(alpha)


def renders(n: int, size: int, seed: int, device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, 3, 8, 8, generator=g), (size, size), mode="bilinear", align_corners=False)
    return x.to(device)


class Capture:
    """Forward hook recording a module's inputs and output, one entry per call."""

    def __init__(self, module: torch.nn.Module, kwargs: bool = True):
        self.calls: list[dict[str, Any]] = []
        self.handle = module.register_forward_hook(self._hook, with_kwargs=kwargs)

    def _hook(self, module, args, kwargs, output):
        self.calls.append({"args": [a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args],
                           "kwargs": {k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()},
                           "output": output})

    def close(self):
        self.handle.remove()


def load_reference(dg4d: Path, folder: Path, device: torch.device, dtype: torch.dtype):
    """DreamGaussian4D's ``Zero123`` on ``folder``, in ``dtype`` (shim: it asserts fp16 and loads with
    ``torch_dtype=float16``; here the pipeline loads in the harness dtype, with the PIL CLIP processor)."""
    install_torchvision_shim()
    on_path(dg4d)
    import zero123 as ref_pipeline_module
    from guidance import zero123_utils

    class Loader:
        @staticmethod
        def from_pretrained(key, torch_dtype=None, trust_remote_code=False):
            return ref_pipeline_module.Zero123Pipeline.from_pretrained(key, torch_dtype=dtype)

    zero123_utils.Zero123Pipeline = Loader
    try:
        ref = zero123_utils.Zero123(device, fp16=True, model_key=str(folder))
    finally:
        zero123_utils.Zero123Pipeline = ref_pipeline_module.Zero123Pipeline
    ref.dtype = dtype
    ref.pipe.feature_extractor = pil_clip_processor(folder / "feature_extractor")
    return ref


def _posterior_noise(ref, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The posterior mean and the sample the reference draws after ``torch.manual_seed(seed)`` (replayed)."""
    dist = ref.vae.encode(2 * x.to(ref.dtype) - 1).latent_dist
    torch.manual_seed(seed)
    eps = torch.randn(dist.mean.shape, device=dist.mean.device, dtype=dist.mean.dtype)
    return dist.mean, dist.std * eps


def run(report: Report, dg4d: Path, work: Path, tiny: bool, device: torch.device, fixtures: dict[str, torch.Tensor],
        frames: int = 2, n_views: int = 2, render_size: int = 32) -> None:
    dtype = torch.float32
    tol = dict(atol=1e-6, rtol=2e-5) if tiny else dict(atol=1e-5, rtol=2e-4)
    on_path(dg4d)
    install_scipy_rotation_shim()
    _cameras(report)
    variants: tuple[tuple[Literal["zero123", "stable"], str], ...] = (("stable", "stable-zero123-diffusers"), ("zero123", "zero123-xl-diffusers"))
    for variant, name in variants:
        row = f"{ROW}/{name.split('-diffusers')[0]}"
        folder = work / "models" / name
        if not (folder / "model_index.json").is_file():
            save_zero123(build_zero123(tiny=tiny, seed=0, variant=variant, device=device, vae_scale_factor=8), folder)
        ours_models = load_zero123(folder, device=device)
        report.compare(row, "variant detected from the folder (DreamGaussian4D: 'stable' in the path)",
                       [ours_models.variant == "stable"], ["stable" in str(folder)], atol=0, rtol=0)
        ref = load_reference(dg4d, folder, device, dtype)
        with torch.no_grad():
            _run_variant(report, row, variant, ref, ours_models, device, tol, fixtures, frames, n_views, render_size, tiny)
        del ref, ours_models


def _cameras(report: Report) -> None:
    """DreamGaussian's ``orbit_camera(elevation, azimuth, radius)`` (OpenGL c2w, elevation < 0 = above)
    against ours (OpenCV c2w, elevation > 0 = above) for the same view."""
    from cam_utils import orbit_camera

    els, azs, rs = [-30.0, 0.0, 15.0, 60.0, -80.0], [0.0, 45.0, -120.0, 179.0, 90.0], [1.5, 2.0, 1.0, 1.5, 2.5]
    ref = np.stack([orbit_camera(e, a, r) for e, a, r in zip(els, azs, rs)])
    ours = orbit_c2w(-torch.tensor(els), torch.tensor(azs), torch.tensor(rs)).double()
    report.compare(ROW, "camera centre of orbit_camera(el, az, r) vs orbit_c2w(-el, az, r)", ours[:, :3, 3], ref[:, :3, 3], atol=1e-6, rtol=0)
    report.compare(ROW, "viewing direction (reference -z of OpenGL c2w, ours +z of OpenCV c2w)", ours[:, :3, 2], -ref[:, :3, 2], atol=1e-6, rtol=0)
    report.compare(ROW, "camera up (reference +y, ours -y)", -ours[:, :3, 1], ref[:, :3, 1], atol=1e-6, rtol=0)


def _run_variant(report, row, variant, ref, ours_models, device, tol, fixtures, n_frames, n_views, render_size, tiny):
    size = 256
    rgb, alpha = reference_images(n_frames, size, seed=1)
    white = rgb * alpha + (1 - alpha)  # main_4d.load_input composites on white
    cfg = SDSConfig(seed=123)
    ours = Zero123Guidance(ours_models, cfg, device, precision="fp32", fused=False, cuda_graphs=False)

    # -- image conditioning ----------------------------------------------------------------------
    clip_ref = Capture(ref.pipe.image_encoder)
    clip_ours = Capture(ours_models.image_encoder)
    c_ref, v_ref, v_mean, v_noise = [], [], [], []
    for i in range(n_frames):
        x = white[i].permute(2, 0, 1)[None].to(device)
        torch.manual_seed(1000 + i)
        c, v = ref.get_img_embeds(x)
        mean, noise = _posterior_noise(ref, F.interpolate(x, (256, 256), mode="bilinear", align_corners=False), 1000 + i)
        c_ref.append(c), v_ref.append(v), v_mean.append(mean), v_noise.append(noise)
    c_ref, v_ref, v_mean, v_noise = (torch.cat(t) for t in (c_ref, v_ref, v_mean, v_noise))
    ours.set_references(rgb, alpha)
    pix_ref = torch.cat([c["args"][0] for c in clip_ref.calls])
    pix_ours = torch.cat([c["args"][0] for c in clip_ours.calls])
    clip_ref.close(), clip_ours.close()
    std = torch.tensor(ours_models.clip_std, device=device).view(1, 3, 1, 1)
    report.deliberate(row, "CLIP pixel values, in 1/255 of the image range", pix_ours * std * 255, pix_ref * std * 255,
                      "ours resizes the float image (bicubic, antialiased); the reference truncates it to uint8 "
                      "(to_pil_image) and resizes with PIL: differences stay within a few 1/255 steps")
    report.deliberate(row, "CLIP image embedding", ours.clip_embeds, c_ref,
                      "follows only from the pixel difference above (same encoder, same weights)")
    report.compare(row, "reference latents = posterior mean (ours) + the reference's posterior sample noise",
                   ours.ref_latents + v_noise / 1.0, v_ref, **tol,
                   note="the reference conditions on one posterior sample, ours on the mean (deliberate: replayable)")
    report.compare(row, "reference latents: our mean vs the reference VAE's posterior mean", ours.ref_latents, v_mean, **tol)
    report.deliberate(row, "reference latents: mean (ours) vs sample (reference)", ours.ref_latents, v_ref,
                      "the size of one posterior sample's noise; vae_sample does not exist in ours by design")

    # -- camera embedding ------------------------------------------------------------------------
    g = np.random.default_rng(7)
    b = n_frames * n_views
    vers = g.integers(-30, 30, b).astype(np.float64).tolist()
    hors = g.integers(-180, 180, b).astype(np.float64).tolist()
    radii = (g.uniform(-0.5, 0.5, b) if variant == "zero123" else np.zeros(b)).tolist()
    T_ref = ref.get_cam_embeddings(vers, hors, radii)  # default_elevation=0, as main_4d calls it
    T_ours = camera_embedding(-torch.tensor(vers), torch.tensor(hors), torch.tensor(radii), variant, ref_elevation=0.0)
    report.compare(row, "camera embedding [Δpolar, sin Δaz, cos Δaz, Δr | π/2]", T_ours, T_ref[:, 0], atol=1e-7, rtol=1e-6)
    if variant == "stable":
        T_el = camera_embedding(-torch.tensor(vers), torch.tensor(hors), torch.tensor(radii), variant, ref_elevation=20.0)
        T_el_ref = ref.get_cam_embeddings(vers, hors, radii, default_elevation=-20.0)
        report.compare(row, "camera embedding with the reference view 20° above (default_elevation=-20)", T_el, T_el_ref[:, 0], atol=1e-7, rtol=1e-6)
        report.deliberate(row, "camera embedding for a reference view 20° above, as main_4d calls it (no default_elevation)",
                          T_el, T_ref[:, 0], "main_4d.py and dg.py never pass default_elevation, so Stable-Zero123 is told "
                          "the reference view is level whatever opt.elevation says; ours passes it (sds.level_reference=true reproduces the original)")
    fixtures[f"{row}/sds_frames"] = torch.tensor([n_frames, n_views, render_size]).float()
    fixtures[f"{row}/cam_vers"] = torch.tensor(vers)
    fixtures[f"{row}/cam_hors"] = torch.tensor(hors)
    fixtures[f"{row}/cam_radii"] = torch.tensor(radii)
    fixtures[f"{row}/cam_embedding"] = T_ref[:, 0].float().cpu()

    # -- SDS: identical conditioning, one noise draw -------------------------------------------
    # main_4d: embeddings per (view, frame), view-major, matching the renders' order.
    order = torch.arange(n_frames).repeat(n_views)
    ref.embeddings = [c_ref[order], v_ref[order]]
    ours.clip_embeds, ours.ref_latents = c_ref.float(), v_ref.float()  # same conditioning on both sides
    imgs = renders(b, render_size, seed=3, device=device)
    step_ratio = 0.37
    with torch.enable_grad():
        x_ref = imgs.clone().requires_grad_(True)
        x_ours = imgs.clone().requires_grad_(True)
        unet_ref, unet_ours = Capture(ref.unet), Capture(ours_models.unet)
        proj_ref = Capture(ref.pipe.clip_camera_projection)
        seed = 4321
        with _posterior_mean(ref):
            torch.manual_seed(seed)
            loss_ref = ref.train_step(x_ref, vers, hors, radii, step_ratio)
        loss_ref.backward()
        ours.generator.manual_seed(seed)
        loss_ours = ours.loss(x_ours, order, -torch.tensor(vers), torch.tensor(hors), torch.tensor(radii), step_ratio, ref_elevation=0.0)
        loss_ours.backward()
        unet_ref.close(), unet_ours.close(), proj_ref.close()
    (r_call,), (o_call,) = unet_ref.calls, unet_ours.calls
    r_in, o_in = r_call["args"][0], o_call["args"][0]
    report.compare(row, "UNet input, noisy latents (cond and uncond halves)", o_in[:, :4], r_in[:, :4], **tol)
    report.compare(row, "UNet input, concat latents (reference latents | zeros for uncond)", o_in[:, 4:], r_in[:, 4:], **tol)
    report.compare(row, "UNet timesteps", o_call["args"][1].float(), r_call["args"][1].float(), atol=0, rtol=0)
    report.compare(row, "UNet encoder_hidden_states (projected CLIP+camera | zeros)", o_call["kwargs"]["encoder_hidden_states"],
                   r_call["kwargs"]["encoder_hidden_states"], **tol)
    report.compare(row, "UNet noise prediction (cond, uncond)", o_call["output"].sample, r_call["output"].sample, **tol)
    report.compare(row, "SDS loss (summed surrogate)", loss_ours.detach(), loss_ref.detach(), **tol)
    report.compare(row, "SDS gradient on the rendered images", x_ours.grad, x_ref.grad, **tol)
    fixtures[f"{row}/sds_step_ratio"] = torch.tensor(step_ratio)
    fixtures[f"{row}/sds_seed"] = torch.tensor(seed)
    fixtures[f"{row}/sds_clip_embeds"] = c_ref.float().cpu()
    fixtures[f"{row}/sds_ref_latents"] = v_ref.float().cpu()
    fixtures[f"{row}/sds_loss"] = loss_ref.detach().float().cpu()
    fixtures[f"{row}/sds_grad"] = x_ref.grad.float().cpu()

    # -- noise level over a run ------------------------------------------------------------------
    iters = 500
    steps = [*range(1, 21), *range(25, 476, 25), *range(481, iters + 1)]  # both clamps (t_max, t_min) step by step
    t_ref = []
    small = imgs[:1, :, :32, :32]
    ref.embeddings = [c_ref[:1], v_ref[:1]]
    cap = Capture(ref.unet)
    with _posterior_mean(ref):
        for step in steps:
            ref.train_step(small, vers[:1], hors[:1], radii[:1], min(1, step / iters))
    cap.close()
    t_ref = torch.stack([c["args"][1][0] for c in cap.calls]).float()
    t_ours = torch.stack([timesteps(cfg, step / iters, 1, ours_models.alphas_cumprod.shape[0])[0] for step in steps]).float()
    report.compare(row, f"noise level t over a {iters}-iteration run (step_ratio = step / iters)", t_ours, t_ref, atol=0, rtol=0)
    fixtures[f"{row}/t_schedule"] = t_ref.cpu()
    fixtures[f"{row}/t_steps"] = torch.tensor(steps).float()


@contextlib.contextmanager
def _posterior_mean(ref):
    """The reference encodes renders with ``posterior.sample()``; inside, with ``mode=True`` (the mean), as ours.

    Also draws its SDS noise (``torch.randn_like(latents)``) in NCHW order: ``randn_like`` fills
    memory in its argument's layout, and the VAE's output is channels-last on some backends (CPU
    oneDNN), which permutes the same random stream; ours draws ``torch.randn(shape)``.
    """
    original, randn_like = ref.encode_imgs, torch.randn_like
    ref.encode_imgs = functools.partial(type(ref).encode_imgs, ref, mode=True)
    torch.randn_like = lambda x, **kw: torch.randn(x.shape, dtype=kw.get("dtype", x.dtype), device=kw.get("device", x.device))
    try:
        yield
    finally:
        ref.encode_imgs, torch.randn_like = original, randn_like
