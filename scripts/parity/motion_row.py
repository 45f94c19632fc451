"""Row 4 (part): MotionDirector's LoRA against ours, on one saved random-weight UNet3D folder.

Compared, with MotionDirector's own ``models/unet_3d_condition.py`` and ``utils/lora_handler.py``:

* its UNet3D fork and diffusers' ``UNet3DConditionModel`` (which ours loads) from the same folder:
  the same parameter names, the same output for the same input;
* which linears get spatial and temporal adapters, their ranks (rank clipped to a layer's width)
  and the initial adapter weights' distribution (``lora_down`` ~ N(0, 1/r), ``lora_up`` = 0);
* a released-format checkpoint (``<step>_unet.pt`` written by its ``save_lora_weights``), loaded by
  ours into the same modules: the UNet output with each path's adapter on.

* DDIM inversion: ``utils/ddim_utils.ddim_inversion`` with the scheduler ``inverse_video`` builds
  (``DDIMScheduler.from_config(pipe.scheduler.config)``, ``set_timesteps(50)``; the harness builds it
  the same way, since importing ``MotionDirector_inference`` pulls in the training script's dataset
  stack) against our ``ddim_invert``, on the same UNet and latents.

Not compared here (yet): the training losses of ``MotionDirector_train.py`` (a closure inside its
``main``), the noise-prior mix and sampling of ``MotionDirector_inference.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from report import Report
from shims import on_path

from text4d.video import lora as ours_lora
from text4d.video.models import load_t2v
from text4d.video.random_models import build_t2v, save_t2v, unet3d_config

ROW = "motion"


def _import_reference(root: Path):
    """MotionDirector's UNet3D fork and LoRA handler. Shim: diffusers moved ``transformer_temporal`` and
    ``transformer_2d`` under ``diffusers.models.transformers``; the old module paths are aliased."""
    import diffusers.models.transformers.transformer_2d as t2d
    import diffusers.models.transformers.transformer_temporal as ttemp

    sys.modules.setdefault("diffusers.models.transformer_temporal", ttemp)
    sys.modules.setdefault("diffusers.models.transformer_2d", t2d)
    for key in [k for k in sys.modules if k.split(".")[0] in ("utils", "models")]:
        del sys.modules[key]
    on_path(root)
    from models.unet_3d_condition import UNet3DConditionModel as RefUNet
    from utils.lora_handler import LoraHandler

    return RefUNet, LoraHandler


def run(report: Report, root: Path, work: Path, tiny: bool, device: torch.device, fixtures: dict) -> None:
    RefUNet, LoraHandler = _import_reference(root)
    folder = work / "models" / ("t2v-tiny" if tiny else "zeroscope-random")
    if not (folder / "model_index.json").is_file():
        save_t2v(harness_t2v(tiny, device), folder)
    ours = load_t2v(folder, device=device).unet.eval()  # the user's path: a zeroscope_v2_576w-layout folder
    ref = RefUNet.from_pretrained(str(folder / "unet")).to(device).eval()
    atol, rtol = (1e-6, 1e-5) if tiny else (1e-5, 1e-4)
    report.compare(ROW, "UNet3D parameter names (MotionDirector's fork vs diffusers')", [sorted(ours.state_dict()) == sorted(ref.state_dict())], [True], atol=0, rtol=0)
    g = torch.Generator().manual_seed(1)
    cfg = ours.config
    side = 8 if tiny else 40
    x = torch.randn(1, 4, 4, side, side, generator=g).to(device)
    text = torch.randn(1, 77, cfg["cross_attention_dim"], generator=g).to(device)
    t = torch.tensor([417], device=device)
    with torch.no_grad():
        report.compare(ROW, "UNet3D output, same weights and input", ours(x, t, text).sample, ref(x, t, text).sample, atol=atol, rtol=rtol)

    rank = 16
    paths: tuple[tuple[ours_lora.Path_, list[str]], ...] = (("spatial", ["Transformer2DModel"]), ("temporal", ["TransformerTemporalModel"]))
    for path, modules in paths:
        handler = LoraHandler(use_unet_lora=True, unet_replace_modules=modules)
        torch.manual_seed(2)
        params, _ = handler.add_lora_to_model(True, ref, modules, 0.0, "", r=rank)
        injected = {n: m for n, m in ref.named_modules() if type(m).__name__ == "LoraInjectedLinear"}
        names = list(injected)
        lora = ours_lora.DualLoRA(ours, rank=rank, dropout=0.0, n_spatial=1 if path == "spatial" else 0, temporal=path == "temporal")
        mine = list(lora.layers[path])
        report.compare(ROW, f"{path} LoRA: the adapted linears (same modules, same order)", [mine == names], [True], atol=0, rtol=0,
                       note=f"{len(names)} linears; first differences: {sorted(set(mine) ^ set(names))[:3]}")
        adapter = "spatial_0" if path == "spatial" else "temporal"
        ranks_ref = [injected[n].r for n in names]
        ranks_ours = [lora.layers[path][n].r[adapter] for n in mine]
        report.compare(ROW, f"{path} LoRA: rank per adapted linear (clipped to the layer's width)", ranks_ours, ranks_ref, atol=0, rtol=0)
        down_ref = torch.cat([injected[n].lora_down.weight.flatten() for n in names])
        down_ours = torch.cat([ours_lora.adapter_weights(lora.layers[path][n], adapter)[0].flatten() for n in mine])
        report.compare(ROW, f"{path} LoRA: initial lora_down std x rank (N(0, 1/r) there)", [down_ours.std().item() * rank], [down_ref.std().item() * rank],
                       atol=0.05, rtol=0, note="distribution, not values: both draw from their own RNG")
        up_ours = torch.cat([ours_lora.adapter_weights(lora.layers[path][n], adapter)[1].flatten() for n in mine])
        report.compare(ROW, f"{path} LoRA: initial lora_up (zero)", up_ours.abs().max(), torch.zeros(()), atol=0, rtol=0)

        # A trained-looking adapter, saved in the released format and loaded by ours.
        with torch.no_grad():
            gen = torch.Generator().manual_seed(3)
            for n in names:
                injected[n].lora_up.weight.copy_(0.2 * torch.randn(injected[n].lora_up.weight.shape, generator=gen))
        ckpt = work / "motion-checkpoint"
        handler.save_lora_weights(model=_PipeLike(ref), save_path=str(ckpt / path), step=100)
        released = ours_lora.read_adapter(ckpt, path, ours)
        report.compare(ROW, f"{path} LoRA: released checkpoint file found and read by ours", [released is not None], [True], atol=0, rtol=0,
                       note=", ".join(str(f.relative_to(ckpt)) for f in sorted((ckpt / path / "lora").glob("*"))))
        assert released is not None  # (reported just above)
        lora.load_state(path, released.tensors, released.source)
        lora.activate(spatial=0 if path == "spatial" else None, temporal=path == "temporal")
        with torch.no_grad():
            report.compare(ROW, f"UNet3D output with the {path} adapter (released .pt loaded by ours)", ours(x, t, text).sample, ref(x, t, text).sample,
                           atol=atol, rtol=rtol)
        lora.activate(spatial=None, temporal=False)
        ours_lora.remove_adapters(ours)
        _restore_linears(ref)
    _inversion(report, folder, device, tiny, fixtures)


def _inversion(report: Report, t2v_root: Path, device: torch.device, tiny: bool, fixtures: dict) -> None:
    """50-step DDIM inversion of one clip's latents, MotionDirector's loop vs ours (same UNet, empty prompt)."""
    from types import SimpleNamespace

    from diffusers import DDIMScheduler
    from utils import ddim_utils  # MotionDirector's utils/ (on sys.path from _import_reference)

    from text4d.video.generate import ddim_invert
    models = load_t2v(t2v_root, device=device)
    g = torch.Generator().manual_seed(5)
    side = 8 if tiny else 40
    latents = torch.randn(1, 4, 4, side, side, generator=g).to(device)
    pipe = SimpleNamespace(tokenizer=models.tokenizer, text_encoder=models.text_encoder, unet=models.unet, device=device,
                           scheduler=models.scheduler)
    sched = DDIMScheduler.from_config(pipe.scheduler.config)  # inverse_video
    sched.set_timesteps(50)
    with torch.no_grad():
        ref = ddim_utils.ddim_inversion(pipe, sched, video_latent=latents, num_inv_steps=50, prompt="")[-1]
        ours = ddim_invert(models, latents, num_steps=50)
    tol = 1e-5 if tiny else 1e-4
    report.compare(ROW, "DDIM inversion (50 steps, empty prompt) of the same latents", ours, ref, atol=tol, rtol=tol)
    if tiny:  # the CI fixture: 10 steps of 2 frames (the same loop; CI time)
        small = latents[:, :, :2]
        sched.set_timesteps(10)
        with torch.no_grad():
            fixtures[f"{ROW}/inversion_10"] = ddim_utils.ddim_inversion(pipe, sched, video_latent=small, num_inv_steps=10, prompt="")[-1].cpu()


def harness_t2v(tiny: bool, device: torch.device | str = "cpu"):
    """The row's random text-to-video model: ZeroScope's (full), or tiny with a UNet3D whose widths are
    multiples of 32 (MotionDirector's fork builds ``transformer_in`` with 32 norm groups whatever
    ``norm_num_groups`` says)."""
    from diffusers.models.unets.unet_3d_condition import UNet3DConditionModel

    models = build_t2v(tiny=tiny, device=device, seed=0)
    if tiny:
        torch.manual_seed(0)
        models.unet = UNet3DConditionModel(**{**unet3d_config(True), "block_out_channels": (32, 64), "norm_num_groups": 32, "attention_head_dim": 8})
        unet: torch.nn.Module = models.unet  # moved as a Module (diffusers wraps .to in functools.wraps, opaque to type checkers)
        unet.to(device)
        models.freeze()
    return models


class _PipeLike:
    """What ``LoraHandler.save_lora_weights`` reads from its ``model`` argument (a pipeline)."""

    def __init__(self, unet):
        self.unet, self.text_encoder = unet, None


def _restore_linears(model: torch.nn.Module) -> None:
    """Undo MotionDirector's injection (its LoraInjectedLinear keeps the original weights in ``.linear``)."""
    for name, module in list(model.named_modules()):
        if type(module).__name__ == "LoraInjectedLinear":
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module.linear)
