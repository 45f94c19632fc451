"""``text4d bench motion``: MotionDirector training and driving-video inference speed and memory.

Runs on the full ZeroScope v2 576w architecture (UNet3D 1.41 B parameters, SD VAE, 340 M CLIP text
encoder) built with random weights on CUDA: speed does not depend on weight values, and nothing
needs downloading. ``tiny=True`` runs the same code paths on a few-channel model (CPU smoke test).

Measured (each after warm-up, wall clock with CUDA synchronisation, peak = max allocated):

* ``train.single_video``: s/step (median; a pass seen for the first time runs eagerly, the second
  time it is captured as a CUDA graph) and peak GiB at 384x384x16, rank 32, one clip, cached latents;
* ``train.multi_video``: the same with ``multi_clips`` clips, one spatial adapter each;
* ``train.memory_saving``: single-video with gradient checkpointing and VAE/text encoder on the CPU;
* ``inference``: 24 frames 576x320, 30 DDIM steps, guidance 12, temporal adapter merged: denoise s,
  end to end s (prompt + denoise + chunked decode), peak GiB; optionally with ``torch.compile``;
* ``inversion``: the 50-step DDIM inversion for the noise prior, and the cache hit that replaces it.
"""

from __future__ import annotations

import gc
import json
import logging
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from text4d.app.bench.timing import peak_gib, reset_peak
from text4d.devices import compiled, pick_dtype, resolve_device, synchronize

logger = logging.getLogger(__name__)


def _reset_peak(device: torch.device) -> None:
    """Before each case: return the previous case's cached blocks, so its peak is this case's alone."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    reset_peak(device)


def _peak(device: torch.device) -> float | None:
    peak = peak_gib(device)
    return None if peak is None else round(peak, 2)


def _train_case(models, device, dtype, *, clips: int, frames: int, size: tuple[int, int], rank: int, steps: int,
                warmup: int, memory_saving: bool, out_dir: Path) -> dict:
    from text4d.video.config import load_train_config
    from text4d.video.data import CachedClip
    from text4d.video.lora import remove_adapters
    from text4d.video.train import MotionTrainer

    w, h = size
    f = models.vae_scale_factor
    g = torch.Generator().manual_seed(0)
    latents = [CachedClip(torch.randn(4, frames, h // f, w // f, generator=g), None, "a person rides a bicycle",
                          f"clip{i}") for i in range(clips)]
    cfg = load_train_config(None, [
        f"output_dir={out_dir}", f"lora_rank={rank}", f"max_train_steps={steps + warmup}",
        f"memory_saving={str(memory_saving).lower()}", "validation.enabled=false", f"train.n_sample_frames={frames}",
        f"device={device}",
    ])
    remove_adapters(models.unet)
    for m in (models.vae, models.text_encoder):
        m.to(device)
    _reset_peak(device)
    tr = MotionTrainer(cfg, models=models, progress=False, clips=latents)
    tr.rng = random.Random(0)
    for _ in range(warmup):
        tr.train_step()
    synchronize(device)
    _reset_peak(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        tr.train_step()  # ends by reading the losses: synchronised
        times.append(time.perf_counter() - t0)
    res = {"step_s": round(statistics.median(times), 4), "mean_step_s": round(statistics.fmean(times), 4),
           "peak_gib": _peak(device), "clips": clips, "frames": frames, "size": [w, h], "rank": rank,
           "spatial_adapters": tr.lora.n_spatial, "checkpointed_modules": tr.checkpointed,
           "cuda_graphs": tr.graphs.captures}
    del tr
    remove_adapters(models.unet)
    return res


def run(tiny: bool = False, device: str | None = None, train_steps: int = 12, warmup: int = 4, multi_clips: int = 4,
        infer: bool = True, train: bool = True, compile: bool = False, out_dir: str | None = None) -> dict:
    """Benchmark training and inference; returns a JSON-able dict (see module docstring).

    ``tiny`` shrinks the model and sizes so the whole thing runs on CPU in seconds.
    """
    import diffusers

    from text4d.video.generate import GenerateResult, InversionCache, ddim_invert, generate
    from text4d.video.lora import DualLoRA, remove_adapters
    from text4d.video.random_models import build_t2v

    dev = resolve_device(device or "auto")
    dtype = pick_dtype("auto", dev)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    work = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="text4d-bench-motion-"))
    t0 = time.perf_counter()
    models = build_t2v(tiny=tiny, device=dev, dtype=dtype)
    n_params = sum(p.numel() for p in models.unet.parameters())
    result: dict = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__, "diffusers": diffusers.__version__, "dtype": str(dtype).replace("torch.", ""),
        "unet_params_b": round(n_params / 1e9, 3),
        "text_encoder_params_m": round(sum(p.numel() for p in models.text_encoder.parameters()) / 1e6, 1),
        "build_s": round(time.perf_counter() - t0, 1),
    }
    train_size, train_frames = ((32, 32), 4) if tiny else ((384, 384), 16)
    rank = 4 if tiny else 32
    steps = 2 if tiny else train_steps
    wu = 1 if tiny else warmup
    if train:
        result["train"] = {}
        for name, clips, ms in (("single_video", 1, False), ("multi_video", multi_clips, False),
                                ("memory_saving", 1, True)):
            result["train"][name] = _train_case(
                models, dev, dtype, clips=clips, frames=train_frames, size=train_size, rank=rank, steps=steps,
                warmup=wu * clips if not tiny else wu, memory_saving=ms, out_dir=work / name)
            logger.info("train %s: %s", name, result["train"][name])
        single = result["train"]["single_video"]["step_s"]
        result["train"]["single_video_150_steps_min"] = round(150 * single / 60, 2)
        offloaded: tuple[torch.nn.Module, ...] = (models.vae, models.text_encoder)  # back from the memory-saving case
        for m in offloaded:
            m.to(dev)

    if infer:
        gc.collect()  # the trainers' CUDA graphs hold their memory pools until collected
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        (w, h), frames, n_steps, inv_steps = ((32, 32), 3, 2, 3) if tiny else ((576, 320), 24, 30, 50)
        # A fresh UNet: the memory-saving case wrapped its modules for checkpointing.
        models = build_t2v(tiny=tiny, device=dev, dtype=dtype)
        remove_adapters(models.unet)
        lora = DualLoRA(models.unet, rank=rank, dropout=0.0, n_spatial=0, temporal=True)
        for p in lora.parameters():
            p.data = p.data.to(dev)

        def panda(steps: int = n_steps, unet: torch.nn.Module | None = None) -> GenerateResult:
            return generate(models, "a panda is lifting weights", num_frames=frames, width=w, height=h, num_inference_steps=steps,
                            guidance_scale=12.0, seed=7, unet=unet)

        inf: dict = {"frames": frames, "size": [w, h], "steps": n_steps}
        with lora.merged(spatial=None, temporal=True), torch.inference_mode():
            panda(steps=1)  # warm-up
            _reset_peak(dev)
            res = panda()
            inf.update(denoise_s=round(res.timings["denoise_s"], 3), decode_s=round(res.timings["decode_s"], 3),
                       end_to_end_s=round(res.timings["total_s"], 3), peak_gib=_peak(dev))
            if compile and dev.type == "cuda":
                cunet = compiled(models.unet)
                t1 = time.perf_counter()
                panda(steps=2, unet=cunet)
                inf["compile_warmup_s"] = round(time.perf_counter() - t1, 1)
                _reset_peak(dev)
                res = panda(unet=cunet)
                inf["compiled"] = {"denoise_s": round(res.timings["denoise_s"], 3),
                                   "end_to_end_s": round(res.timings["total_s"], 3), "peak_gib": _peak(dev)}
        result["inference"] = inf

        ref = torch.randn(1, 4, frames, h // models.vae_scale_factor, w // models.vae_scale_factor,
                          generator=torch.Generator().manual_seed(1))
        cache = InversionCache(work / "inversions")
        with torch.inference_mode():
            synchronize(dev)
            t1 = time.perf_counter()
            inv = ddim_invert(models, ref, inv_steps)
            synchronize(dev)
            inv_s = time.perf_counter() - t1
            cache.get_or_compute(models, ref, inv_steps)
            t1 = time.perf_counter()
            cache.get_or_compute(models, ref, inv_steps)
            hit_s = time.perf_counter() - t1
        result["inversion"] = {"steps": inv_steps, "s": round(inv_s, 3), "cache_hit_s": round(hit_s, 4),
                               "finite": bool(torch.isfinite(inv).all())}
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    print(json.dumps(run(), indent=2))
