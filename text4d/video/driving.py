"""Text -> driving video for the 4D stage: base model + adapters + noise prior + matting + files.

This is what ``text4d motion generate`` (and later ``text4d run``) calls. Adapters come from:

* ``checkpoint``: a checkpoint folder (ours or a released MotionDirector one) or a run folder plus
  ``checkpoint_index``. Like the original's inference its temporal path is used; a checkpoint that
  only has a spatial path (an image run) contributes that instead.
* ``spatial`` / ``temporal``: appearance from one training, motion from another (either format; a
  released ``.../spatial/lora`` folder or file works too).

For one-shot generation the chosen adapters are merged into the base weights, so sampling costs
what the bare model costs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from text4d.devices import compiled, pick_dtype, resolve_device
from text4d.errors import InputError
from text4d.io.atomic import write_json
from text4d.io.media import VIDEO_EXTS, read_video, write_rgba_frames, write_video
from text4d.video import data as vdata
from text4d.video.generate import InversionCache, generate
from text4d.video.lora import AdapterFile, DualLoRA, read_adapter, resolve_checkpoint
from text4d.video.matting import foreground
from text4d.video.models import T2VModels, load_t2v, vae_encode

logger = logging.getLogger(__name__)


@dataclass
class DrivingVideoRequest:
    """Everything ``text4d motion generate`` takes (CLI flags map 1:1)."""

    model: str
    prompt: str
    output: str = "outputs/inference"
    checkpoint: str | None = None
    checkpoint_index: int | None = None
    spatial: str | None = None
    temporal: str | None = None
    spatial_index: int = 0
    spatial_scale: float = 1.0
    temporal_scale: float = 1.0
    noise_prior: float = 0.0
    reference: str | None = None
    reference_index: int | None = None
    inversion_steps: int = 50
    negative_prompt: str = ""
    seed: int | None = None
    width: int = 384
    height: int = 384
    frames: int = 16
    steps: int = 30
    guidance: float = 12.0
    fps: int = 8
    matting_model: str | None = None
    size: int = 512
    border_ratio: float = 0.2
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    vae_chunk: int = 8


def _adapters(req: DrivingVideoRequest, unet: torch.nn.Module) -> tuple[AdapterFile | None, AdapterFile | None, Path | None]:
    """(spatial, temporal, checkpoint folder) as requested."""
    spatial = temporal = None
    ckpt = None
    if req.checkpoint:
        ckpt = resolve_checkpoint(req.checkpoint, req.checkpoint_index)
        temporal = read_adapter(ckpt, "temporal", unet, bare=ckpt.is_file())
        if temporal is None:
            spatial = read_adapter(ckpt, "spatial", unet)
        if temporal is None and spatial is None:
            raise InputError(f"{ckpt} (from --checkpoint) holds no motion adapters: expected temporal.safetensors / "
                             "spatial.safetensors or a released temporal/lora/<step>_unet.pt")
    if req.spatial:
        spatial = read_adapter(req.spatial, "spatial", unet, bare=True)
        if spatial is None:
            raise InputError(f"no spatial adapter found at {req.spatial} (from --spatial)")
    if req.temporal:
        temporal = read_adapter(req.temporal, "temporal", unet, bare=True)
        if temporal is None:
            raise InputError(f"no temporal adapter found at {req.temporal} (from --temporal)")
    if spatial is not None and temporal is not None and spatial.rank != temporal.rank:
        logger.info("spatial rank %d and temporal rank %d differ; each path keeps its own", spatial.rank, temporal.rank)
    return spatial, temporal, ckpt


def attach_adapters(unet: torch.nn.Module, spatial: AdapterFile | None, temporal: AdapterFile | None) -> list[DualLoRA]:
    """Create and fill one DualLoRA per present path (each path may have its own rank)."""
    loras = []
    if spatial is not None:
        lo = DualLoRA(unet, rank=spatial.rank, dropout=0.0, n_spatial=spatial.count, temporal=False)
        lo.load_state("spatial", spatial.tensors, spatial.source)
        loras.append(lo)
    if temporal is not None:
        lo = DualLoRA(unet, rank=temporal.rank, dropout=0.0, n_spatial=0, temporal=True)
        lo.load_state("temporal", temporal.tensors, temporal.source)
        loras.append(lo)
    return loras


def _reference(req: DrivingVideoRequest, models: T2VModels, ckpt: Path | None, out: Path) -> tuple[torch.Tensor | None, InversionCache]:
    """Reference latents for the noise prior and the inversion cache to use with them."""
    if req.noise_prior <= 0:
        return None, InversionCache(None)
    if req.reference:
        ref = Path(req.reference).expanduser()
        cache = InversionCache(out / "inversion_cache")
        if ref.suffix == ".safetensors":
            return vdata.read_reference(ref), InversionCache(ref.parent)
        if ref.suffix.lower() not in VIDEO_EXTS:
            raise InputError(f"--reference {ref} must be a video ({', '.join(VIDEO_EXTS)}) or cached latents")
        frames, _ = read_video(ref)
        pixels = vdata.to_pixels(frames[: req.frames], req.width, req.height)
        lat = vae_encode(models, pixels[None], generator=torch.Generator().manual_seed(0)).float().cpu()
        return lat, cache
    run = None
    if ckpt is not None:
        for cand in (ckpt, *ckpt.parents[:2]):
            if (cand / "cached_latents").is_dir():
                run = cand / "cached_latents"
                break
    files = vdata.reference_latents(run) if run is not None else []
    if not files:
        raise InputError("--noise-prior > 0 needs a reference video: pass --reference VIDEO, or a --checkpoint inside "
                         "a training run that cached its latents (cached_latents/)")
    if req.reference_index is not None:
        if not 0 <= req.reference_index < len(files):
            raise InputError(f"--reference-index {req.reference_index} out of range: the run has {len(files)} clips")
        file = files[req.reference_index]
    else:
        file = random.Random(req.seed).choice(files)  # as the original picks a random cached clip
    logger.info("noise prior reference: %s", file)
    return vdata.read_reference(file), InversionCache(run)


def make_driving_video(req: DrivingVideoRequest, models: T2VModels | None = None, progress: bool = True,
                       callback: Callable[[int, torch.Tensor], None] | None = None) -> dict:
    """Generate the driving video and its RGBA frames under ``req.output``; returns paths and timings.

    ``callback(i, latents)`` runs after each denoising step (see :func:`text4d.video.generate.generate`).
    """
    if not req.prompt or not req.prompt.strip():
        raise InputError("the prompt is empty; pass --prompt \"what should happen\"")
    device = resolve_device(req.device)
    dtype = pick_dtype(req.precision, device)
    if models is None:
        models = load_t2v(req.model, key="--model", device=device, dtype=dtype)
    out = Path(req.output).expanduser()
    spatial, temporal, ckpt = _adapters(req, models.unet)
    loras = attach_adapters(models.unet, spatial, temporal)
    for lo in loras:
        for p in lo.parameters():
            p.data = p.data.to(device)
    reference, cache = _reference(req, models, ckpt, out)
    with contextlib.ExitStack() as stack:
        for lo in loras:
            stack.enter_context(lo.disabled())
        if reference is not None:  # computed (or found) now, on the bare base model
            cache.get_or_compute(models, reference, req.inversion_steps, progress=progress)

    with contextlib.ExitStack() as stack:
        for lo in loras:
            if lo.n_spatial:
                if not 0 <= req.spatial_index < lo.n_spatial:
                    raise InputError(f"--spatial-index {req.spatial_index} out of range ({lo.n_spatial} spatial adapters)")
                lo.set_scale("spatial", req.spatial_scale)
                stack.enter_context(lo.merged(spatial=req.spatial_index, temporal=False))
            else:
                lo.set_scale("temporal", req.temporal_scale)
                stack.enter_context(lo.merged(spatial=None, temporal=True))
        unet = compiled(models.unet) if req.compile else None
        res = generate(
            models, req.prompt, negative_prompt=req.negative_prompt, num_frames=req.frames, width=req.width,
            height=req.height, num_inference_steps=req.steps, guidance_scale=req.guidance, seed=req.seed,
            noise_prior=req.noise_prior, reference_latents=reference, inversion_steps=req.inversion_steps,
            inversion_cache=cache, vae_chunk=req.vae_chunk, progress=progress, unet=unet, callback=callback,
        )

    video = write_video(out / "video.mp4", res.frames, req.fps)
    rgb, alpha = foreground(res.frames, req.matting_model, size=req.size, border_ratio=req.border_ratio)
    pngs = write_rgba_frames(out / "frames", rgb, alpha)
    write_video(out / "foreground.mp4", rgb * alpha[..., None] + (1 - alpha[..., None]), req.fps)
    meta = {"request": asdict(req), "timings": res.timings, "frames": len(pngs)}
    write_json(out / "meta.json", json.loads(json.dumps(meta, default=str)))
    return {"video": video, "frames": out / "frames", "timings": res.timings, "rgb": rgb, "alpha": alpha,
            "raw": res.frames}
