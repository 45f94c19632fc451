"""Driving-video generation: parity with diffusers, DDIM inversion, noise prior cache, CLI end to end."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from typer.testing import CliRunner  # noqa: E402

from text4d.app.video import motion_app  # noqa: E402
from text4d.errors import InputError  # noqa: E402
from text4d.video import generate as gen  # noqa: E402
from text4d.video.lora import DualLoRA, target_modules  # noqa: E402
from text4d.video.models import encode_prompts, load_t2v  # noqa: E402
from text4d.video.random_models import build_t2v, save_t2v  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_t2v(build_t2v(tiny=True, seed=0), tmp_path_factory.mktemp("models") / "zeroscope")


@pytest.fixture
def models(model_dir):
    return load_t2v(model_dir)


def test_generate_matches_diffusers_pipeline_with_adapters_off(models, model_dir):
    from diffusers import TextToVideoSDPipeline

    lora = DualLoRA(models.unet, rank=4, n_spatial=1)
    for p in lora.parameters():
        torch.nn.init.normal_(p)  # adapters that would change everything, but switched off
    lora.activate(spatial=None, temporal=False)
    ours = gen.generate(models, "a panda lifts weights", num_frames=3, width=32, height=32, num_inference_steps=3,
                        guidance_scale=7.5, seed=7)
    pipe = TextToVideoSDPipeline.from_pretrained(str(model_dir))
    pipe.set_progress_bar_config(disable=True)
    ref = pipe("a panda lifts weights", num_frames=3, width=32, height=32, num_inference_steps=3, guidance_scale=7.5,
               generator=torch.Generator().manual_seed(7), output_type="np").frames[0]
    assert ours.frames.shape == (3, 32, 32, 3)
    np.testing.assert_allclose(ours.frames, np.asarray(ref), atol=1e-4)


def test_ddim_inversion_then_sampling_reconstructs(models):
    # A random UNet's prediction jumps between neighbouring latents, which is exactly the error DDIM
    # inversion makes; a smaller output layer keeps it smooth like a trained model's.
    with torch.no_grad():
        models.unet.conv_out.weight.mul_(0.05)
        models.unet.conv_out.bias.mul_(0.05)
    lat = torch.randn(1, 4, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.8
    inv = gen.ddim_invert(models, lat, num_steps=50)
    assert not torch.allclose(inv, lat, atol=1e-2), "inversion must move the latents"
    rec = gen.ddim_sample(models, inv, encode_prompts(models, [""]), None, num_inference_steps=50, guidance_scale=1.0)
    err = (rec - lat).pow(2).mean().sqrt() / lat.pow(2).mean().sqrt()
    assert err < 0.05, float(err)


def test_noise_prior_uses_and_reuses_the_inversion_cache(models, tmp_path, monkeypatch):
    calls = []
    real = gen.ddim_invert
    monkeypatch.setattr(gen, "ddim_invert", lambda *a, **k: calls.append(1) or real(*a, **k))
    ref = torch.randn(1, 4, 2, 8, 8)
    cache = gen.InversionCache(tmp_path / "cache")
    kw = dict(num_frames=2, width=32, height=32, num_inference_steps=2, seed=1, noise_prior=0.5,
              reference_latents=ref, inversion_steps=3, inversion_cache=cache)
    a = gen.generate(models, "a dog", **kw)
    b = gen.generate(models, "a dog", **kw)
    assert len(calls) == 1 and len(list((tmp_path / "cache").glob("inversion-*"))) == 1
    np.testing.assert_array_equal(a.frames, b.frames)
    c = gen.generate(models, "a dog", **{**kw, "noise_prior": 0.0, "reference_latents": None, "inversion_cache": None})
    assert not np.array_equal(a.frames, c.frames)
    # p = 0 needs neither a cache folder nor a reference (the original crashes without cached_latents/)
    lat = gen.initial_latents((1, 4, 2, 8, 8), torch.Generator().manual_seed(0), torch.device("cpu"), torch.float32)
    assert lat.shape == (1, 4, 2, 8, 8)
    with pytest.raises(InputError, match="reference"):
        gen.generate(models, "a dog", num_frames=2, width=32, height=32, num_inference_steps=2, noise_prior=0.3)


def test_generate_refuses_bad_inputs(models):
    with pytest.raises(InputError, match="prompt is empty"):
        gen.generate(models, "  ", num_frames=2, width=32, height=32)
    with pytest.raises(InputError, match="multiples of 4"):
        gen.generate(models, "a cat", num_frames=2, width=30, height=32)
    with pytest.raises(InputError, match="noise-prior"):
        gen.generate(models, "a cat", num_frames=2, width=32, height=32, noise_prior=1.5)


def _released_checkpoint(unet, folder: Path, step: int) -> Path:
    ckpt = folder / f"checkpoint-{step}"
    g = torch.Generator().manual_seed(4)
    for path in ("spatial", "temporal"):
        tensors = []
        for name in target_modules(unet, path):
            lin = unet.get_submodule(name)
            r = min(32, lin.in_features, lin.out_features)
            tensors += [torch.randn(lin.out_features, r, generator=g) * 0.1, torch.randn(r, lin.in_features, generator=g)]
        (ckpt / path / "lora").mkdir(parents=True)
        torch.save(tensors, ckpt / path / "lora" / f"{step}_unet.pt")
    return ckpt


def test_cli_generate_from_released_checkpoint_writes_video_and_rgba_frames(model_dir, models, tmp_path):
    run = tmp_path / "riding_bicycle"
    _released_checkpoint(copy.deepcopy(models.unet), run, 300)
    out = tmp_path / "out"
    common = ["--model", str(model_dir), "--prompt", "A panda is lifting weights.", "--seed", "7", "--width", "32",
              "--height", "32", "--frames", "3", "--steps", "2", "--size", "24", "--device", "cpu"]
    res = CliRunner().invoke(motion_app, ["generate", *common, "--checkpoint", str(run), "--checkpoint-index", "300",
                                          "--output", str(out)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    from PIL import Image

    pngs = sorted((out / "frames").glob("*.png"))
    assert (out / "video.mp4").stat().st_size > 0 and len(pngs) == 3
    with Image.open(pngs[0]) as im:
        assert im.mode == "RGBA" and im.size == (24, 24)
    # spatial from one checkpoint, temporal from another (here the same released run)
    res = CliRunner().invoke(motion_app, ["generate", *common, "--spatial", str(run / "checkpoint-300" / "spatial" / "lora"),
                                          "--temporal", str(run / "checkpoint-300"), "--output", str(tmp_path / "o2")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    res = CliRunner().invoke(motion_app, ["generate", *common, "--checkpoint", str(run), "--checkpoint-index", "5",
                                          "--output", str(tmp_path / "o3")])
    assert isinstance(res.exception, InputError) and "no checkpoint-5" in str(res.exception)


def test_cli_convert_then_generate_gives_the_same_video(model_dir, models, tmp_path):
    run = tmp_path / "run"
    ckpt = _released_checkpoint(copy.deepcopy(models.unet), run, 150)
    res = CliRunner().invoke(motion_app, ["convert", str(ckpt), str(tmp_path / "conv"), "--model", str(model_dir)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    from text4d.video.driving import DrivingVideoRequest, make_driving_video

    kw = dict(model=str(model_dir), prompt="a car", seed=3, width=32, height=32, frames=2, steps=2, size=16,
              device="cpu")
    a = make_driving_video(DrivingVideoRequest(checkpoint=str(ckpt), output=str(tmp_path / "a"), **kw),
                           models=load_t2v(model_dir), progress=False)
    b = make_driving_video(DrivingVideoRequest(checkpoint=str(tmp_path / "conv"), output=str(tmp_path / "b"), **kw),
                           models=load_t2v(model_dir), progress=False)
    c = make_driving_video(DrivingVideoRequest(output=str(tmp_path / "c"), **kw), models=load_t2v(model_dir),
                           progress=False)
    np.testing.assert_array_equal(a["raw"], b["raw"])
    assert not np.allclose(a["raw"], c["raw"]), "the temporal adapter must change the video"


def test_bench_motion_tiny_smoke():
    from text4d.app.bench.motion import run

    res = run(tiny=True, device="cpu")
    assert res["train"]["multi_video"]["spatial_adapters"] == 4
    assert res["train"]["memory_saving"]["checkpointed_modules"] > 0
    assert res["inference"]["denoise_s"] > 0 and res["inversion"]["finite"]
    assert res["inversion"]["cache_hit_s"] < res["inversion"]["s"]


def test_sampling_accepts_a_compiled_unet(models):
    """``--compile`` passes a torch.compile'd UNet; it must sample the same latents (eager backend: no compiler needed)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 2, 4, 4, generator=g)
    cond = torch.randn(1, 77, models.unet.config.cross_attention_dim, generator=g)
    plain = gen.ddim_sample(models, x, cond, None, num_inference_steps=2)
    compiled = gen.ddim_sample(models, x, cond, None, num_inference_steps=2, unet=torch.compile(models.unet, backend="eager"))
    torch.testing.assert_close(compiled, plain)
