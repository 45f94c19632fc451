"""MotionDirector training on a tiny random T2V model and a synthetic moving-box video."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from text4d.errors import ConfigError, InputError, ModelFileError  # noqa: E402
from text4d.io.media import write_video  # noqa: E402
from text4d.video.config import load_train_config  # noqa: E402
from text4d.video.models import load_t2v  # noqa: E402
from text4d.video.random_models import build_t2v, save_t2v  # noqa: E402
from text4d.video.train import (  # noqa: E402
    MotionTrainer,
    checkpoint_steps,
    debiased_temporal_loss,
    enable_gradient_checkpointing,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def base_models():
    return build_t2v(tiny=True, seed=0)


@pytest.fixture
def models(base_models):
    return copy.deepcopy(base_models)


@pytest.fixture(scope="module")
def box_video(tmp_path_factory) -> Path:
    """A white box sliding right over black: 6 frames, 32x48."""
    d = tmp_path_factory.mktemp("vid")
    frames = np.zeros((6, 32, 48, 3), np.uint8)
    for i in range(6):
        frames[i, 8:20, 4 + 4 * i : 16 + 4 * i] = 255
    return write_video(d / "box.mp4", frames, 8)


def _cfg(out: Path, video: Path, *extra: str):
    return load_train_config(None, [
        "device=cpu", f"output_dir={out}", "train.kind=single_video", f"train.path={video}", "train.prompt=a box slides",
        "train.width=32", "train.height=32", "train.n_sample_frames=3", "lora_rank=4", "max_train_steps=4",
        "checkpointing_steps=2", "validation.enabled=false", *extra,
    ])


def _eval_loss(tr: MotionTrainer) -> float:
    """Temporal loss at fixed timesteps and noise, so before/after numbers are comparable."""
    g = torch.Generator().manual_seed(123)
    sched = tr.models.scheduler
    tr.unet.eval()
    total = 0.0
    with torch.no_grad():
        for clip_idx, clip in enumerate(tr.clips):
            lat = clip.latents[None]
            tr.lora.activate(spatial=0 if tr.lora.n_spatial == 1 else clip_idx, temporal=tr.lora.temporal)
            for t in (100, 400, 700):
                noise = torch.randn(lat.shape, generator=g)
                tt = torch.tensor([t])
                # diffusers annotates timesteps as torch.IntTensor (the legacy int32 class); it takes any integer tensor
                pred = tr.unet(sched.add_noise(lat, noise, cast(torch.IntTensor, tt)), tt, encoder_hidden_states=tr.embeds[clip.prompt]).sample
                total += debiased_temporal_loss(pred, noise, 0).item()
    return total


def test_training_reduces_loss_and_changes_only_adapters(models, box_video, tmp_path):
    cfg = _cfg(tmp_path / "run", box_video, "learning_rate=3e-3", "lora_dropout=0.0", "max_train_steps=30")
    tr = MotionTrainer(cfg, models=models, progress=False)
    assert len(tr.clips) == 2 and tr.lora.n_spatial == 2  # two 3-frame chunks, one spatial adapter each
    base_before = {n: p.detach().clone() for n, p in tr.unet.named_parameters() if "lora_" not in n}
    lora_before = [p.detach().clone() for p in tr.lora.parameters()]
    before = _eval_loss(tr)
    for _ in range(30):
        tr.train_step()
    after = _eval_loss(tr)
    assert after < 0.97 * before, (before, after)
    for n, p in tr.unet.named_parameters():
        if "lora_" not in n:
            assert torch.equal(p, base_before[n]), n
    changed = [not torch.equal(a, b) for a, b in zip(lora_before, tr.lora.parameters())]
    assert all(changed[len(changed) // 2 :]) and any(changed)


def test_resume_continues_bit_exactly(base_models, box_video, tmp_path):
    straight = MotionTrainer(_cfg(tmp_path / "a", box_video), models=copy.deepcopy(base_models), progress=False)
    straight.run()
    assert sorted(checkpoint_steps(tmp_path / "a")) == [2, 4]

    first = MotionTrainer(_cfg(tmp_path / "b", box_video, "max_train_steps=2"), models=copy.deepcopy(base_models),
                          progress=False)
    first.run()
    resumed = MotionTrainer(_cfg(tmp_path / "b", box_video), models=copy.deepcopy(base_models), progress=False)
    assert resumed.step == 2
    resumed.run()
    for a, b in zip(straight.lora.parameters(), resumed.lora.parameters()):
        assert torch.equal(a, b)
    for oa, ob in zip(straight.opt_spatial + [straight.opt_temporal], resumed.opt_spatial + [resumed.opt_temporal]):
        for pa, pb in zip(oa.param_groups[0]["params"], ob.param_groups[0]["params"]):
            assert torch.equal(oa.state[pa]["exp_avg"], ob.state[pb]["exp_avg"])
    assert not list((tmp_path / "b").glob(".checkpoint-*")), "no partial checkpoint may be left behind"


@pytest.mark.gpu
@pytest.mark.parametrize("checkpointing", [False, True])
def test_cuda_graph_steps_match_eager_steps(base_models, box_video, tmp_path, checkpointing):
    runs = {}
    for graphs in (False, True):
        cfg = _cfg(tmp_path / str(graphs), box_video, "lora_dropout=0.0", "max_train_steps=12", "device=cuda",
                   "mixed_precision=no", f"cuda_graphs={str(graphs).lower()}", "spatial_skip_prob=0.5",
                   f"gradient_checkpointing={str(checkpointing).lower()}", "learning_rate=1e-3")
        torch.backends.cudnn.deterministic = True
        tr = MotionTrainer(cfg, models=copy.deepcopy(base_models), progress=False)
        losses = [tr.train_step() for _ in range(12)]
        runs[graphs] = losses, [p.detach().cpu() for p in tr.lora.parameters()], tr.graphs.captures
    torch.backends.cudnn.deterministic = False
    (eager, eager_params, none), (graphed, graphed_params, captures) = runs[False], runs[True]
    assert none == 0 and captures >= 3  # spatial and temporal passes of both clips at least
    assert [sorted(a) for a in eager] == [sorted(b) for b in graphed]
    for a, b in zip(eager, graphed):
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=1e-3), k
    for a, b in zip(eager_params, graphed_params):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_memory_saving_mode_still_trains_images(models, tmp_path):
    from PIL import Image

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for k in range(2):
        a = np.zeros((40, 32, 3), np.uint8)
        a[10:30, 8 + k * 4 : 20 + k * 4] = (200, 50, 50)
        Image.fromarray(a).save(imgs / f"{k}.png")
    cfg = load_train_config(None, [
        f"output_dir={tmp_path / 'run'}", "train.kind=images", f"train.path={imgs}", "train.prompt=a red block",
        "train.width=32", "train.height=32", "train.hflip_prob=0.5", "lora_rank=4", "max_train_steps=2",
        "memory_saving=true", "validation.enabled=false",
    ])
    tr = MotionTrainer(cfg, models=models, progress=False)
    assert tr.checkpointed > 0
    assert tr.lora.n_spatial == 1 and not tr.lora.temporal and tr.opt_temporal is None
    assert tr.clips[0].latents_flip is not None and tr.clips[0].latents.shape[1] == 1
    before = [p.detach().clone() for p in tr.lora.parameters("spatial")]
    tr.run()
    assert any(not torch.equal(a, b) for a, b in zip(before, tr.lora.parameters("spatial")))


def test_gradient_checkpointing_gives_the_same_gradients(models, box_video, tmp_path):
    tr = MotionTrainer(_cfg(tmp_path / "a", box_video), models=models, progress=False)
    lat = tr.clips[0].latents[None]
    noise = torch.randn(lat.shape, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([300])
    noisy = tr.models.scheduler.add_noise(lat, noise, t)

    def grads() -> list[torch.Tensor]:
        torch.manual_seed(5)  # same dropout masks in both runs (checkpointing restores them on recompute)
        tr.unet.train()
        tr.lora.activate(spatial=0, temporal=True, train="temporal")
        pred = tr.unet(noisy, t, encoder_hidden_states=tr.embeds[tr.clips[0].prompt]).sample
        debiased_temporal_loss(pred, noise, 1).backward()
        out = [p.grad.clone() for p in tr.lora.parameters("temporal")]
        for p in tr.lora.parameters("temporal"):
            p.grad = None
        return out

    plain = grads()
    assert enable_gradient_checkpointing(tr.unet) > 0
    for a, b in zip(plain, grads()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    assert any(g.abs().sum() > 0 for g in plain)


def test_validation_writes_preview_videos(models, box_video, tmp_path):
    cfg = _cfg(tmp_path / "run", box_video, "max_train_steps=1", "validation.enabled=true", "validation_steps=1",
               "validation.num_frames=2", "validation.width=32", "validation.height=32",
               "validation.num_inference_steps=2", "validation.noise_prior=0.5", "validation.prompts=[a cat runs]")
    MotionTrainer(cfg, models=models, progress=False).run()
    assert (tmp_path / "run" / "samples" / "1_a_cat_runs.mp4").is_file()
    assert list((tmp_path / "run" / "cached_latents").glob("inversion-*.safetensors"))


def test_presets_reproduce_the_original_values():
    expect = {
        "multi_videos": (384, 384, 16, 3000, 100, 500, "folder"),
        "single_video": (384, 384, 16, 150, 50, 50, "single_video"),
        "single_video_24": (576, 320, 24, 300, 50, 50, "single_video"),
        "multi_images": (384, 384, 16, 1000, 50, 50, "images"),
        "single_image": (384, 384, 16, 300, 100, 100, "images"),
    }
    for name, (w, h, n, steps, ck, val, kind) in expect.items():
        c = load_train_config(str(ROOT / "configs" / "motion" / f"{name}.yaml"))
        got = (c.train.width, c.train.height, c.train.n_sample_frames, c.max_train_steps, c.checkpointing_steps,
               c.validation_steps, c.train.kind)
        assert got == (w, h, n, steps, ck, val, kind), name
        assert c.lora_rank == 32 and c.lora_dropout == 0.1 and c.learning_rate == 5e-4


def test_mixed_precision_no_survives_yaml():
    # YAML reads a bare `no` as False, which OmegaConf then stores as the string "False".
    assert load_train_config(None, ["mixed_precision=no"]).mixed_precision == "no"


def test_bad_inputs_give_clear_errors(base_models, box_video, tmp_path):
    with pytest.raises(ModelFileError, match=r"nowhere.*--model"):
        load_t2v(tmp_path / "nowhere")
    (tmp_path / "half" / "unet").mkdir(parents=True)
    with pytest.raises(ModelFileError, match="missing vae/, text_encoder/"):
        load_t2v(tmp_path / "half", key="model")
    with pytest.raises(ConfigError, match="train.widht"):
        load_train_config(None, ["train.widht=3"])
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00not a video")
    with pytest.raises(InputError, match="cannot read video"):
        MotionTrainer(_cfg(tmp_path / "r1", bad), models=copy.deepcopy(base_models), progress=False)
    with pytest.raises(InputError, match="no prompt"):
        MotionTrainer(_cfg(tmp_path / "r2", box_video, "train.prompt=''"), models=copy.deepcopy(base_models),
                      progress=False)


def test_model_folder_round_trip(base_models, tmp_path):
    save_t2v(base_models, tmp_path / "zs")
    m = load_t2v(tmp_path / "zs")
    x = torch.randn(1, 4, 2, 16, 16)
    e = torch.randn(1, 77, 16)
    with torch.no_grad():
        assert torch.equal(m.unet(x, 5, encoder_hidden_states=e).sample,
                           base_models.unet(x, 5, encoder_hidden_states=e).sample)
    assert m.tokenizer("a cat").input_ids[0] == base_models.tokenizer("a cat").input_ids[0]
