"""animate (every dynamic config) and the whole run chain end to end, with tiny random models on CPU."""

from __future__ import annotations

import json

import pytest
import torch
from rich.console import Console

from text4d.animate import build_animate_stage, load_animate_config
from text4d.guidance.random_models import build_zero123, save_zero123
from text4d.pipeline import run
from tests.test_frames import write_clip

TINY_DYN = ["ref_size=16", "batch_size=2", "n_views=1", "iters=2", "init_points=100", "sds.image_size=16", "backend=torch", "device=cpu"]


@pytest.fixture(scope="module")
def zero123_dir(tmp_path_factory):
    return save_zero123(build_zero123(tiny=True), tmp_path_factory.mktemp("z") / "stable-zero123")


@pytest.mark.parametrize("name", ["4d", "4d_low", "4d_demo", "4d_c4d"])
def test_dynamic_configs_run_with_zero123(name, tmp_path, zero123_dir):
    clip = write_clip(tmp_path / "clip", 6)
    cfg = load_animate_config(f"configs/dynamic/{name}.yaml", TINY_DYN + [f"frames={clip}", f"zero123={zero123_dir}"])
    stage = build_animate_stage(cfg)
    assert stage.num_frames == (3 if name == "4d_demo" else 6)  # 4d_demo downsamples time by 2
    assert stage.novel.guidance.models.variant == "stable"
    for _ in range(2):
        losses = stage.step()
    assert "novel" in losses and torch.isfinite(torch.tensor(losses["loss"]))


def test_paper_switch_freezes_gaussians_and_caps_noise(tmp_path):
    cfg = load_animate_config("configs/dynamic/4d.yaml", ["paper=true", f"frames={tmp_path}"])
    assert cfg.train_gaussians is False and cfg.sds.max_noise == 0.5


def test_consistent4d_clip_is_evaluated(tmp_path):
    clip = write_clip(tmp_path / "blooming_rose", 4)
    for k in range(2):
        write_clip(clip / f"eval_{k}", 4)
    cfg = load_animate_config("configs/dynamic/4d_c4d.yaml", TINY_DYN + [f"frames={clip}", "ground_truth.azimuths=[90,270]"])
    stage = build_animate_stage(cfg)
    stage.step()
    metrics = stage.evaluate()
    assert set(metrics) == {"psnr", "ssim", "iou"} and all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A tiny random CLIP vision model (Zero123's image-encoder class) saved as a local folder."""
    from text4d.guidance.random_models import build_clip_vision, clip_processor

    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("clip") / "tiny-clip"
    model = build_clip_vision(tiny=True)
    model.save_pretrained(folder)
    clip_processor(model.config.image_size).save_pretrained(folder)
    return folder


def test_clip_similarity_from_a_local_folder(clip_dir, tmp_path):
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig

    from text4d.clip_score import load_clip

    clip = load_clip(clip_dir)
    x = torch.rand(3, 40, 48, 3, generator=torch.Generator().manual_seed(0))
    same, other = clip(x, x), clip(x, x.flip(0))
    assert same.shape == (3,) and torch.allclose(same, torch.ones(3), atol=1e-5)
    assert other[1] == pytest.approx(1.0, abs=1e-5) and bool((other[[0, 2]] < 1 - 1e-4).all())
    # A full CLIPModel folder: its vision tower and projection are what get loaded.
    vision = clip.encoder.config
    text = CLIPTextConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, projection_dim=16)
    full = CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16)).eval()
    full.save_pretrained(tmp_path / "full")
    pixels = clip.preprocess(x)
    expected = torch.nn.functional.normalize(full.visual_projection(full.vision_model(pixel_values=pixels).pooler_output), dim=-1)
    torch.testing.assert_close(load_clip(tmp_path / "full").embed(x), expected, atol=1e-5, rtol=1e-4)


def test_consistent4d_clip_is_scored_with_clip(tmp_path, clip_dir):
    clip = write_clip(tmp_path / "blooming_rose", 4)
    for k in range(2):
        write_clip(clip / f"eval_{k}", 4)
    cfg = load_animate_config("configs/dynamic/4d_c4d.yaml", TINY_DYN + [f"frames={clip}", "ground_truth.azimuths=[90,270]", f"clip_model={clip_dir}"])
    stage = build_animate_stage(cfg)
    stage.step()
    metrics = stage.evaluate()
    assert {"psnr", "ssim", "iou", "clip"} <= set(metrics) and -1.0 <= metrics["clip"] <= 1.0 + 1e-6
    gt = stage.test
    # A perfect render scores 1: the metric compares like with like.
    assert stage.clip(gt.composite(torch.ones(3)), gt.composite(torch.ones(3))).min() == pytest.approx(1.0, abs=1e-5)


def test_wrong_clip_folder_names_the_path_and_key(tmp_path, zero123_dir):
    from typer.testing import CliRunner

    from cli import app
    from text4d.clip_score import load_clip
    from text4d.errors import ModelFileError

    clip = write_clip(tmp_path / "rose", 2)
    write_clip(clip / "eval_0", 2)
    missing = tmp_path / "no-such-clip"
    cfg = load_animate_config("configs/dynamic/4d_c4d.yaml", TINY_DYN + [f"frames={clip}", "ground_truth.azimuths=[90]", f"clip_model={missing}"])
    with pytest.raises(ModelFileError, match="clip_model") as err:
        build_animate_stage(cfg)
    assert str(missing) in str(err.value)
    with pytest.raises(ModelFileError, match="'UNet2DConditionModel' model, not CLIP"):  # a folder of another model
        load_clip(zero123_dir / "unet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError, match="config.json"):
        load_clip(tmp_path / "empty")
    result = CliRunner().invoke(app, ["animate", "--video", str(clip), "--clip", str(missing), "--ui", "none", f"out={tmp_path / 'runs'}"] + TINY_DYN)
    assert result.exit_code != 0 and isinstance(result.exception, ModelFileError) and "--clip" in str(result.exception)


def test_text_to_4d_chain_end_to_end(tmp_path, zero123_dir):
    from text4d.video.random_models import build_t2v, save_t2v

    t2v = save_t2v(build_t2v(tiny=True), tmp_path / "t2v")
    overrides = [
        "prompt=a red ball bouncing", f"t2v={t2v}", f"zero123={zero123_dir}", "num_frames=4", "video_size=16", "video_steps=2",
        f"out={tmp_path / 'runs'}", "device=cpu", "export=[ply]",
        "static.iters=2", "static.ref_size=16", "static.resolutions=[16,16,16]", "static.sds.image_size=16", "static.num_pts=100",
        "static.backend=torch", "static.size=32",
    ] + [f"dynamic.{o}" for o in TINY_DYN]
    folder = run(None, overrides, ui="none", console=Console(quiet=True))
    assert len(list((folder / "video" / "frames").glob("*.png"))) == 4
    assert (folder / "static" / "model.ply").is_file()
    assert json.loads((folder / "static" / "model.json").read_text())["radius"] == 2.0
    plys = list((folder / "dynamic").rglob("frame_*.ply"))
    assert len(plys) == 4
    assert set(json.loads((folder / "manifest.json").read_text())["stages_done"]) == {"video", "static", "dynamic"}
    # Re-running reuses every finished stage; asking to redo the dynamic stage only redoes that.
    before = (folder / "static" / "model.ply").stat().st_mtime_ns
    run(None, overrides + [f"run_dir={folder}", "redo=[dynamic]"], ui="none", console=Console(quiet=True))
    assert (folder / "static" / "model.ply").stat().st_mtime_ns == before
    assert len(list((folder / "dynamic").rglob("frame_*.ply"))) == 4


def test_cli_static_ply_import(tmp_path):
    from typer.testing import CliRunner

    from cli import app
    from text4d.gaussians.model import GaussianModel
    from text4d.io.ply import load_ply, save_ply

    model = GaussianModel.random_ball(30, 0.5, generator=torch.Generator().manual_seed(0))
    save_ply(tmp_path / "dg.ply", model.to_ply())
    result = CliRunner().invoke(app, ["static", "--ply", str(tmp_path / "dg.ply"), "--radius", "2", "--ui", "none", f"out={tmp_path / 'runs'}"])
    assert result.exit_code == 0, result.output
    out = next((tmp_path / "runs").rglob("model.ply"))
    assert torch.allclose(torch.from_numpy(load_ply(out).means), model.means.detach() * 0.75, atol=1e-6)
