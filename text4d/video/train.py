"""MotionDirector dual-path LoRA training: resumable, seeded, one adapter set per clip without nesting.

One step (batch 1, shared noise and timestep for both paths):

* spatial path (probability 1 - ``spatial_skip_prob``): temporal adapters off, the clip's spatial
  adapter on; one random frame through the UNet; MSE to that frame's noise. Learns appearance.
* temporal path: the clip's spatial adapter (frozen for this pass; off on steps that skipped the
  spatial loss, as in the original) plus the temporal adapter; all frames through the UNet;
  ``MSE(pred, eps) + MSE(a*pred - b*pred[k], a*eps - b*eps[k])`` with b = 1, a = sqrt(2), k a
  random anchor frame. The second term removes what all frames share (appearance) so the temporal
  adapter learns motion.

Each path has its own AdamW (one per spatial adapter), constant learning rate. Latents and prompt
embeddings are computed once; the frozen base runs in bf16 where the device supports it and the
adapters stay fp32 (peft runs them on an fp32 copy of their input), so no autocast is needed:
autocast would run every GroupNorm in fp32 and cast activations back and forth (an H100 step took
0.63 s with it, 0.52 s without). Gradient checkpointing is off unless asked for or in
``memory_saving`` mode (which also moves the VAE and text encoder off the GPU).

A run folder holds ``config.yaml``, ``cached_latents/``, ``checkpoint-<step>/`` (adapter
safetensors + optimiser states, step and every RNG state, written to a temporary folder and renamed
so a checkpoint is either complete or absent), ``samples/`` and ``metrics.jsonl``. Running the same
config again resumes from the latest checkpoint and continues bit-exactly (on the CPU; on CUDA, cuDNN
autotuning may pick other kernels after a restart, and the first step of each pass runs eagerly).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import random
import shutil
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F

from text4d.accel.cuda_graphs import StepGraphs
from text4d.config import to_yaml
from text4d.devices import pick_dtype, resolve_device
from text4d.errors import InputError
from text4d.io.atomic import append_jsonl, write_text
from text4d.io.checkpoint import load_checkpoint, save_checkpoint
from text4d.io.media import write_video
from text4d.video import data as vdata
from text4d.video.config import MotionTrainConfig
from text4d.video.generate import InversionCache, generate
from text4d.video.lora import DualLoRA, read_adapter_file, save_adapter_file
from text4d.video.models import T2VModels, encode_prompts, load_t2v, vae_encode

logger = logging.getLogger(__name__)

DEBIAS_BETA = 1.0
DEBIAS_ALPHA = math.sqrt(DEBIAS_BETA**2 + 1.0)


_CHECKPOINTED = ("ResnetBlock2D", "TemporalConvLayer", "Transformer2DModel", "TransformerTemporalModel")


def enable_gradient_checkpointing(unet: torch.nn.Module) -> int:
    """Recompute every resnet, temporal conv and transformer of the UNet in the backward pass.

    diffusers' ``UNet3DConditionModel`` declares no gradient-checkpointing support (its 3D blocks
    never consult the flag), so the memory-saving mode wraps those modules' forwards itself.
    Non-reentrant checkpointing lets gradients reach the adapters although the frozen inputs need
    none, and restores the RNG so dropout masks match on recompute. Returns the number wrapped.
    """
    from torch.utils.checkpoint import checkpoint

    count = 0
    for module in unet.modules():
        if type(module).__name__ not in _CHECKPOINTED or getattr(module, "_text4d_checkpointed", False):
            continue
        forward = module.forward

        def wrapped(*args, _forward=forward, _module=module, **kwargs):
            if torch.is_grad_enabled() and _module.training:
                return checkpoint(_forward, *args, use_reentrant=False, **kwargs)
            return _forward(*args, **kwargs)

        module.forward = wrapped
        vars(module)["_text4d_checkpointed"] = True  # a plain attribute (what Module.__setattr__ does with a bool)
        count += 1
    return count


def checkpoint_steps(run: Path) -> dict[int, Path]:
    """Complete checkpoints of a run by step (partial ones are temporary folders, never listed)."""
    out = {}
    for d in run.glob("checkpoint-*"):
        tail = d.name.split("-", 1)[1]
        if d.is_dir() and tail.isdigit() and (d / "state.json").is_file():
            out[int(tail)] = d
    return out


def debiased_temporal_loss(pred: torch.Tensor, target: torch.Tensor, anchor: int | torch.Tensor) -> torch.Tensor:
    """MSE plus the appearance-debiased MSE against one anchor frame (tensors [B, C, F, h, w]).

    ``anchor`` may be a one-element index tensor, so a captured graph reads it rather than baking it in.
    """
    pred, target = pred.float(), target.float()
    idx = anchor.reshape(1) if torch.is_tensor(anchor) else torch.tensor([anchor], device=pred.device)
    loss = F.mse_loss(pred, target)
    p_d = DEBIAS_ALPHA * pred - DEBIAS_BETA * pred.index_select(2, idx)
    t_d = DEBIAS_ALPHA * target - DEBIAS_BETA * target.index_select(2, idx)
    return loss + F.mse_loss(p_d, t_d)


class MotionTrainer:
    """Owns the models, adapters, optimisers and RNGs of one training run."""

    def __init__(self, cfg: MotionTrainConfig, models: T2VModels | None = None, progress: bool = True,
                 clips: list[vdata.CachedClip] | None = None):
        """``models`` and ``clips`` (already-encoded latents) skip loading from disk (tests, benchmarks)."""
        self.cfg = cfg
        self.progress = progress
        self.run_dir = Path(cfg.output_dir).expanduser()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.device = resolve_device(cfg.device)
        self.dtype = pick_dtype(cfg.mixed_precision, self.device)
        # Seeds are applied (the original reads `seed` from its config but never sets it).
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        torch.manual_seed(cfg.seed)
        self.rng = random.Random(cfg.seed)
        self.gen = torch.Generator("cpu").manual_seed(cfg.seed)

        if models is None:
            models = load_t2v(cfg.model, key="model", device=self.device, dtype=self.dtype)
        else:
            for m in models.modules():
                m.to(self.device)
                if next(m.parameters()).dtype != self.dtype:
                    m.to(self.dtype)
        self.models = models
        self.unet = models.unet
        self.clips = clips if clips is not None else self._latents()
        self.cache = InversionCache(self.run_dir / "cached_latents")

        prompts = sorted({c.prompt for c in self.clips} | set(cfg.validation.prompts) | {""})
        embs = encode_prompts(models, prompts)
        self.embeds = {p: embs[i : i + 1].to(self.device, self.dtype) for i, p in enumerate(prompts)}
        if cfg.memory_saving:
            offloaded: tuple[torch.nn.Module, ...] = (models.text_encoder, models.vae)
            for m in offloaded:
                m.to("cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

        images = cfg.train.kind == "images"
        n_spatial = 1 if (cfg.single_spatial_lora or images) else len(self.clips)
        train_temporal = cfg.train_temporal_lora and not images
        self.lora = DualLoRA(self.unet, rank=cfg.lora_rank, dropout=cfg.lora_dropout, n_spatial=n_spatial,
                             temporal=train_temporal)
        self.lora_params_to(self.device)
        fused = self.device.type == "cuda"
        if fused:
            torch.backends.cudnn.benchmark = True  # two input shapes per clip size (one frame, all frames)
        self.opt_spatial = [
            torch.optim.AdamW(list(self.lora.parameters("spatial", i)), lr=cfg.learning_rate,
                              weight_decay=cfg.adam_weight_decay, fused=fused)
            for i in range(n_spatial)
        ]
        self.opt_temporal = (
            torch.optim.AdamW(list(self.lora.parameters("temporal")), lr=cfg.learning_rate,
                              weight_decay=cfg.adam_weight_decay, fused=fused)
            if train_temporal else None
        )
        self.checkpointed = 0
        if cfg.gradient_checkpointing or cfg.memory_saving:
            self.checkpointed = enable_gradient_checkpointing(self.unet)
        # H100, 384x384x16: graphs + checkpointing step in 0.48 s at 6.9 GiB, checkpointing alone
        # in 1.16 s at 5.8 GiB; memory_saving promises the smaller footprint.
        self.graphs = StepGraphs(enabled=cfg.cuda_graphs and not cfg.memory_saving and self.device.type == "cuda")
        if self.graphs.enabled:
            StepGraphs.prepare_grads(list(self.lora.parameters()))
        self.step = 0
        self._resume()
        write_text(self.run_dir / "config.yaml", to_yaml(cfg))

    # -- setup -------------------------------------------------------------------------------
    def lora_params_to(self, device: torch.device) -> None:
        for p in self.lora.parameters():
            p.data = p.data.to(device)

    def _latents(self) -> list[vdata.CachedClip]:
        cfg = self.cfg
        folder = self.run_dir / "cached_latents"
        fp = vdata.cache_fingerprint(cfg.train, self.models.source, cfg.seed)
        if cfg.cache_latents:
            cached = vdata.load_cached(folder, fp)
            if cached is not None:
                logger.info("using %d cached latent clip(s) from %s", len(cached), folder)
                return cached
        clips = vdata.load_clips(cfg.train, random.Random(cfg.seed))
        gen = torch.Generator("cpu").manual_seed(cfg.seed)
        items = []
        for clip in clips:
            lat = vae_encode(self.models, clip.pixels[None], generator=gen)[0].float().cpu()
            flip = None
            if cfg.train.hflip_prob > 0:
                flip = vae_encode(self.models, clip.pixels.flip(-1)[None], generator=gen)[0].float().cpu()
            items.append(vdata.CachedClip(lat, flip, clip.prompt, clip.name))
        if cfg.cache_latents:
            folder.mkdir(parents=True, exist_ok=True)
            for i, item in enumerate(items):
                vdata.save_cached(folder, i, item)
            vdata.write_cache_index(folder, fp, len(items))
        return items

    # -- one step ----------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        """One optimisation step on clip ``step % n_clips``; returns the losses."""
        cfg, sched = self.cfg, self.models.scheduler
        i = self.step % len(self.clips)
        clip = self.clips[i]
        s_idx = 0 if self.lora.n_spatial == 1 else i
        latents = clip.latents[None].to(self.device, self.dtype)
        noise = torch.randn(latents.shape, generator=self.gen).to(self.device, self.dtype)
        t = torch.randint(0, sched.config["num_train_timesteps"], (1,), generator=self.gen).to(self.device)
        # diffusers annotates timesteps as torch.IntTensor (the legacy int32 class); it takes any integer tensor
        timesteps = cast(torch.IntTensor, t)
        noisy = sched.add_noise(latents, noise, timesteps)
        target = noise if sched.config["prediction_type"] == "epsilon" else sched.get_velocity(latents, noise, timesteps)
        emb = self.embeds[clip.prompt]
        opt_temporal = self.opt_temporal
        temporal = opt_temporal is not None
        do_spatial = not temporal or self.rng.random() >= cfg.spatial_skip_prob
        frame = self.rng.randrange(latents.shape[2])
        anchor = self.rng.randrange(latents.shape[2])
        flipped = clip.latents_flip if clip.latents_flip is not None and self.rng.random() < cfg.train.hflip_prob else None
        if not self.unet.training:  # a full .train() walks ~4000 modules: only after validation
            self.unet.train()
        losses: dict[str, torch.Tensor] = {}
        if do_spatial:
            x = noisy[:, :, frame : frame + 1]
            if flipped is not None:
                x = sched.add_noise(flipped[None, :, frame : frame + 1].to(x), noise[:, :, frame : frame + 1], timesteps)
            losses["loss_spatial"] = self.graphs(
                ("spatial", s_idx, tuple(x.shape)), functools.partial(self._spatial_pass, s_idx),
                x=x, t=t, emb=emb, target=target[:, :, frame : frame + 1])
        if temporal:
            s_on = s_idx if do_spatial else None
            losses["loss_temporal"] = self.graphs(
                ("temporal", s_on, tuple(noisy.shape)), functools.partial(self._temporal_pass, s_on),
                x=noisy, t=t, emb=emb, target=target, anchor=torch.tensor([anchor], device=self.device))
        keep_grads = self.graphs.enabled  # the graphs accumulate into these very tensors
        if do_spatial:
            self.opt_spatial[s_idx].step()
            self.opt_spatial[s_idx].zero_grad(set_to_none=not keep_grads)
        if opt_temporal is not None:
            opt_temporal.step()
            opt_temporal.zero_grad(set_to_none=not keep_grads)
        self.step += 1
        return {k: v.item() for k, v in losses.items()}  # one sync, after the whole step is queued

    def _spatial_pass(self, s_idx: int, x, t, emb, target) -> torch.Tensor:
        """Appearance: the clip's spatial adapter alone on one frame; backward; the loss."""
        self.lora.activate(spatial=s_idx, temporal=False, train="spatial")
        pred = self.unet(x, t, encoder_hidden_states=emb, return_dict=False)[0]
        loss = F.mse_loss(pred.float(), target.float())
        loss.backward()
        return loss.detach()

    def _temporal_pass(self, s_idx: int | None, x, t, emb, target, anchor) -> torch.Tensor:
        """Motion: the temporal adapter (over the frozen spatial one) on all frames; backward; the loss."""
        self.lora.activate(spatial=s_idx, temporal=True, train="temporal")
        pred = self.unet(x, t, encoder_hidden_states=emb, return_dict=False)[0]
        loss = debiased_temporal_loss(pred, target, anchor)
        loss.backward()
        return loss.detach()

    # -- checkpoints ---------------------------------------------------------------------------
    def _state(self) -> dict:
        numpy_state = np.random.get_state()
        assert isinstance(numpy_state, tuple)  # the legacy form of the global MT19937: (name, keys, pos, has_gauss, gauss)
        rng = {"python": self.rng.getstate(), "global_python": random.getstate(), "torch": torch.get_rng_state(),
               "gen": self.gen.get_state(), "numpy": list(numpy_state[1].tolist()), "numpy_pos": int(numpy_state[2])}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "step": self.step,
            "optim_spatial": [o.state_dict() for o in self.opt_spatial],
            "optim_temporal": self.opt_temporal.state_dict() if self.opt_temporal is not None else None,
            "rng": rng,
            "n_spatial": self.lora.n_spatial,
            "rank": self.cfg.lora_rank,
        }

    def save(self) -> Path:
        """Write ``checkpoint-<step>`` atomically (temporary folder renamed into place)."""
        final = self.run_dir / f"checkpoint-{self.step}"
        tmp = self.run_dir / f".checkpoint-{self.step}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if self.lora.n_spatial:
            save_adapter_file(self.lora, "spatial", tmp / "spatial.safetensors")
        if self.lora.temporal:
            save_adapter_file(self.lora, "temporal", tmp / "temporal.safetensors")
        save_checkpoint(self._state(), tmp / "state")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        logger.info("saved %s", final)
        return final

    def _resume(self) -> None:
        steps = checkpoint_steps(self.run_dir)
        if not steps:
            return
        ckpt = steps[max(steps)]
        state = load_checkpoint(ckpt / "state")
        if state["n_spatial"] != self.lora.n_spatial or state["rank"] != self.cfg.lora_rank:
            raise InputError(f"{ckpt} was trained with {state['n_spatial']} spatial adapter(s) at rank "
                             f"{state['rank']}, this config needs {self.lora.n_spatial} at rank {self.cfg.lora_rank}; "
                             "use another output_dir or the original config")
        for path in ("spatial", "temporal"):
            file = ckpt / f"{path}.safetensors"
            if file.is_file():
                self.lora.load_state(path, read_adapter_file(file).tensors, str(file))
        for opt, sd in zip(self.opt_spatial, state["optim_spatial"]):
            opt.load_state_dict(sd)
        if self.opt_temporal is not None and state["optim_temporal"] is not None:
            self.opt_temporal.load_state_dict(state["optim_temporal"])
        rng = state["rng"]
        self.rng.setstate(_tuplify(rng["python"]))
        random.setstate(_tuplify(rng["global_python"]))
        torch.set_rng_state(rng["torch"])
        self.gen.set_state(rng["gen"])
        np.random.set_state(("MT19937", np.array(rng["numpy"], dtype=np.uint32), rng["numpy_pos"], 0, 0.0))
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.step = int(state["step"])
        logger.info("resumed %s at step %d", self.run_dir, self.step)

    # -- validation ----------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> list[Path]:
        """Render the validation prompts with the current adapters into ``samples/``."""
        v = self.cfg.validation
        clip_idx = (self.step - 1) % len(self.clips)
        s_idx = 0 if self.lora.n_spatial == 1 else clip_idx
        use_spatial = v.spatial_scale > 0 and self.lora.n_spatial > 0
        self.unet.eval()
        vae: torch.nn.Module = self.models.vae  # moved as a Module (diffusers wraps its .to in functools.wraps, opaque to type checkers)
        if self.cfg.memory_saving:
            vae.to(self.device)
        self.lora.set_scale("spatial", v.spatial_scale if use_spatial else 1.0)
        self.lora.activate(spatial=s_idx if use_spatial else None, temporal=self.lora.temporal)
        written = []
        prompts = v.prompts or [self.clips[clip_idx].prompt]
        try:
            for k, prompt in enumerate(prompts):
                res = generate(
                    self.models, prompt, num_frames=v.num_frames, width=v.width, height=v.height,
                    num_inference_steps=v.num_inference_steps, guidance_scale=v.guidance_scale,
                    seed=self.cfg.seed + k, noise_prior=v.noise_prior,
                    reference_latents=self.clips[clip_idx].latents[None] if v.noise_prior > 0 else None,
                    inversion_cache=self.cache, lora=self.lora, prompt_embeds=(self.embeds[prompt], self.embeds[""]),
                )
                name = "".join(ch if ch.isalnum() or ch in " -_" else "" for ch in prompt).strip().replace(" ", "_")
                written.append(write_video(self.run_dir / "samples" / f"{self.step}_{name[:80]}.mp4", res.frames, 8))
        finally:
            self.lora.set_scale("spatial", 1.0)
            if self.cfg.memory_saving:
                vae.to("cpu")
        return written

    # -- loop ----------------------------------------------------------------------------------
    def run(self) -> Path:
        """Train to ``max_train_steps`` with checkpoints and previews; returns the run folder."""
        cfg = self.cfg
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.max_train_steps, initial=self.step, desc="motion LoRA", unit="step")
        while self.step < cfg.max_train_steps:
            losses = self.train_step()
            append_jsonl(self.run_dir / "metrics.jsonl", {"step": self.step, **losses})
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k.split("_")[1]: f"{v:.4f}" for k, v in losses.items()})
            if self.step % cfg.checkpointing_steps == 0 or self.step == cfg.max_train_steps:
                self.save()
            if cfg.validation.enabled and self.step % cfg.validation_steps == 0:
                self.validate()
        if bar is not None:
            bar.close()
        return self.run_dir


def _tuplify(obj):
    """Python's RNG state is nested tuples; JSON gives lists back."""
    if isinstance(obj, (list, tuple)):
        return tuple(_tuplify(x) for x in obj)
    return obj


def train(cfg: MotionTrainConfig, models: T2VModels | None = None, progress: bool = True) -> Path:
    """Train (or resume) a MotionDirector run described by ``cfg``; returns its folder."""
    return MotionTrainer(cfg, models=models, progress=progress).run()
