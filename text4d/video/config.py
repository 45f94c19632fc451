"""Structured configs for MotionDirector training and driving-video generation.

Loaded with :func:`text4d.config.load_config` (YAML + ``key=value`` overrides merged onto these
dataclasses), so an unknown key or a wrong type is a :class:`~text4d.errors.ConfigError` naming the
key before anything loads. ``configs/motion/*.yaml`` hold the original's presets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from text4d.config import load_config

__all__ = ["TrainDataConfig", "ValidationConfig", "MotionTrainConfig", "load_train_config"]


@dataclass
class TrainDataConfig:
    """What to learn from: a folder of videos, one video, or a folder of images."""

    kind: str = field(default="folder", metadata={"choices": ("folder", "single_video", "images"),
                                                  "help": "folder of videos | one video | folder of images"})
    path: str = field(default="", metadata={"help": "the folder or video file"})
    prompt: str = field(default="", metadata={"help": "the one prompt describing every clip/image"})
    width: int = field(default=384, metadata={"min": 8})
    height: int = field(default=384, metadata={"min": 8})
    use_bucketing: bool = True
    fps: int = field(default=8, metadata={"min": 1, "help": "folder videos are resampled to this rate"})
    frame_step: int = field(default=1, metadata={"min": 1, "help": "single video: take every n-th frame"})
    n_sample_frames: int = field(default=16, metadata={"min": 1})
    hflip_prob: float = field(default=0.0, metadata={"min": 0.0, "max": 1.0, "help": "images: random h-flip"})


@dataclass
class ValidationConfig:
    """Preview videos rendered during training."""

    prompts: list[str] = field(default_factory=list)
    enabled: bool = True
    num_frames: int = field(default=16, metadata={"min": 1})
    width: int = field(default=384, metadata={"min": 8})
    height: int = field(default=384, metadata={"min": 8})
    num_inference_steps: int = field(default=30, metadata={"min": 1})
    guidance_scale: float = field(default=12.0, metadata={"min": 0.0})
    spatial_scale: float = field(default=0.0, metadata={"min": 0.0, "help": "scale of the spatial adapter"})
    noise_prior: float = field(default=0.0, metadata={"min": 0.0, "max": 1.0})


@dataclass
class MotionTrainConfig:
    """MotionDirector dual-path LoRA training (defaults: the original's single-video preset)."""

    model: str = field(default="models/zeroscope_v2_576w", metadata={"help": "diffusers T2V folder"})
    output_dir: str = field(default="outputs/train/run", metadata={"help": "run folder; resumed if it exists"})
    train: TrainDataConfig = field(default_factory=TrainDataConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    cache_latents: bool = True
    lora_rank: int = field(default=32, metadata={"min": 1})
    lora_dropout: float = field(default=0.1, metadata={"min": 0.0, "max": 1.0})
    learning_rate: float = field(default=5e-4, metadata={"min": 0.0})
    adam_weight_decay: float = field(default=1e-2, metadata={"min": 0.0})
    max_train_steps: int = field(default=150, metadata={"min": 1})
    checkpointing_steps: int = field(default=50, metadata={"min": 1})
    validation_steps: int = field(default=50, metadata={"min": 1})
    seed: int = 0
    single_spatial_lora: bool = field(default=False, metadata={"help": "one spatial adapter for all clips"})
    train_temporal_lora: bool = True
    spatial_skip_prob: float = field(default=0.2, metadata={"min": 0.0, "max": 1.0,
                                                             "help": "chance a step skips the spatial loss"})
    mixed_precision: str = field(default="auto", metadata={"choices": ("auto", "bf16", "no"),
                                                           "help": "auto = bf16 where the device supports it"})
    gradient_checkpointing: bool = False
    memory_saving: bool = field(default=False, metadata={
        "help": "gradient checkpointing + VAE/text encoder off the GPU once latents are cached"})
    cuda_graphs: bool = field(default=True, metadata={
        "help": "replay each training pass as a CUDA graph (CUDA only; off in memory_saving mode, whose "
                "budget the graphs' memory pool would exceed)"})
    device: str = "auto"


def load_train_config(path: str | None, overrides: list[str] | None = None) -> MotionTrainConfig:
    return load_config(MotionTrainConfig, path, overrides)
