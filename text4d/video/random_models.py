"""Random-weight models with the exact classes of the real ones, for tests and benchmarks.

Speed does not depend on weight values, and every loading path can be exercised by saving these
with ``save_pretrained`` and loading them back through :func:`text4d.video.models.load_t2v`. The
``full`` sizes are the ZeroScope v2 576w / ModelScope T2V architecture (UNet3D 1.41 B parameters,
SD VAE, 340 M OpenCLIP-H text encoder); ``tiny`` sizes run a training step in milliseconds on CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from text4d.video.models import T2VModels


def write_clip_tokenizer(folder: str | Path) -> Path:
    """Write a character-level CLIP BPE vocabulary (no merges) as ``vocab.json`` + ``merges.txt``.

    It has the real tokenizer's file layout and special tokens, so ``CLIPTokenizer.from_pretrained``
    loads it like ZeroScope's ``tokenizer/`` folder, without any download.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = [chr(c) for c in range(33, 127)]
    vocab: dict[str, int] = {}
    for suffix in ("", "</w>"):
        for c in chars:
            vocab[c + suffix] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"model_max_length": 77, "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                    "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"})
    )
    return folder


def unet3d_config(tiny: bool) -> dict:
    if not tiny:
        return {}  # diffusers' defaults are the ModelScope / ZeroScope UNet3D
    return dict(
        sample_size=16, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
        cross_attention_dim=16, attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
    )


def build_t2v(tiny: bool = True, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
              seed: int = 0, tokenizer_dir: str | Path | None = None) -> T2VModels:
    """Random-weight UNet3D + VAE + CLIP text encoder + tokenizer + DDIM scheduler (ZeroScope's schedule)."""
    import tempfile

    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_3d_condition import UNet3DConditionModel
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet3DConditionModel(**unet3d_config(tiny))
        if tiny:
            vae = AutoencoderKL(block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=4, latent_channels=4,
                                down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
            text_cfg = CLIPTextConfig(vocab_size=190, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, max_position_embeddings=77, bos_token_id=188,
                                      eos_token_id=189, pad_token_id=189)
        else:
            vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
            text_cfg = CLIPTextConfig(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                                      num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu",
                                      projection_dim=1024)
        text_encoder = CLIPTextModel(text_cfg)
    if tokenizer_dir is None:
        tokenizer_dir = tempfile.mkdtemp(prefix="text4d-tok-")
    tok_folder = write_clip_tokenizer(tokenizer_dir)
    tokenizer = CLIPTokenizer(str(tok_folder / "vocab.json"), str(tok_folder / "merges.txt"), model_max_length=77)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    models = T2VModels(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
                       source="random-tiny" if tiny else "random-zeroscope")
    if dtype != torch.float32:
        for m in models.modules():
            m.to(dtype)
    models.freeze()
    return models


def save_t2v(models: T2VModels, folder: str | Path) -> Path:
    """Save as a diffusers model folder (same layout as ZeroScope's)."""
    folder = Path(folder)
    models.unet.save_pretrained(folder / "unet")
    models.vae.save_pretrained(folder / "vae")
    models.text_encoder.save_pretrained(folder / "text_encoder")
    write_clip_tokenizer(folder / "tokenizer")
    models.scheduler.save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "TextToVideoSDPipeline", "unet": ["diffusers", "UNet3DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "DDIMScheduler"],
    }))
    return folder
