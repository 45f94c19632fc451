"""animate (every dynamic config) and the whole run chain end to end, with tiny random models on CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from rich.console import Console

from tests.support.media import write_clip
from text4d.app.animate import KIND as ANIMATE
from text4d.app.animate import apply_paper, build_animate_stage
from text4d.app.chain import ChainRun, _driving_video, run
from text4d.app.runkind import load
from text4d.guidance.random_models import build_zero123, save_zero123

TINY_DYN = ["ref_size=16", "resolutions=[8,16,16]", "batch_size=2", "n_views=1", "iters=2", "init_points=100", "sds.image_size=16", "backend=torch", "device=cpu"]


@pytest.fixture(scope="module")
def zero123_dir(tmp_path_factory):
    return save_zero123(build_zero123(tiny=True), tmp_path_factory.mktemp("z") / "stable-zero123")


@pytest.mark.parametrize("name", ["4d", "4d_low", "4d_demo", "4d_c4d"])
def test_dynamic_configs_run_with_zero123(name, tmp_path, zero123_dir):
    clip = write_clip(tmp_path / "clip", 6)
    cfg = load(ANIMATE, f"configs/dynamic/{name}.yaml", TINY_DYN + [f"frames={clip}", f"zero123={zero123_dir}"])
    stage = build_animate_stage(cfg, torch.device("cpu"))
    assert stage.num_frames == (3 if name == "4d_demo" else 6)  # 4d_demo downsamples time by 2
    assert stage.novel.guidance.models.variant == "stable"
    for _ in range(2):
        losses = stage.step()
    assert "novel" in losses and torch.isfinite(torch.tensor(losses["loss"]))


def test_paper_switch_freezes_gaussians_and_caps_noise(tmp_path):
    cfg = apply_paper(load(ANIMATE, "configs/dynamic/4d.yaml", ["paper=true", f"frames={tmp_path}"]))
    assert cfg.train_gaussians is False and cfg.sds.max_noise == 0.5


def test_consistent4d_clip_is_evaluated(tmp_path):
    clip = write_clip(tmp_path / "blooming_rose", 4)
    for k in range(2):
        write_clip(clip / f"eval_{k}", 4)
    cfg = load(ANIMATE, "configs/dynamic/4d_c4d.yaml", TINY_DYN + [f"frames={clip}", "ground_truth.azimuths=[90,270]"])
    stage = build_animate_stage(cfg, torch.device("cpu"))
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
    cfg = load(ANIMATE, "configs/dynamic/4d_c4d.yaml", TINY_DYN + [f"frames={clip}", "ground_truth.azimuths=[90,270]", f"clip_model={clip_dir}"])
    stage = build_animate_stage(cfg, torch.device("cpu"))
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
    cfg = load(ANIMATE, "configs/dynamic/4d_c4d.yaml", TINY_DYN + [f"frames={clip}", "ground_truth.azimuths=[90]", f"clip_model={missing}"])
    with pytest.raises(ModelFileError, match="clip_model") as err:
        build_animate_stage(cfg, torch.device("cpu"))
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
        f"out={tmp_path / 'runs'}", "device=cpu", "exports=[ply-seq]",
        "static.iters=2", "static.ref_size=16", "static.resolutions=[16,16,16]", "static.sds.image_size=16", "static.num_pts=100",
        "static.backend=torch", "static.size=32",
    ] + [f"dynamic.{o}" for o in TINY_DYN]
    previews = []
    folder = run(None, overrides, ui="none", console=Console(quiet=True), on_preview=previews.append)
    assert len(list((folder / "video" / "frames").glob("*.png"))) == 4
    # The driving video was watchable while generated: one latent preview per denoising step, then the frames.
    assert [(p.step, p.final) for p in previews] == [(1, False), (2, False), (2, True)]
    assert [tuple(p.frames.shape) for p in previews] == [(4, 8, 8, 3)] * 2 + [(4, 16, 16, 3)]  # the tiny VAE halves the side
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


@pytest.fixture(scope="module")
def tiny_t2v():
    from text4d.video.random_models import build_t2v

    return build_t2v(tiny=True)


def _t2v_job(models, frames=3, size=16, steps=3):
    from text4d.video.generate import generate

    return lambda callback: generate(models, "a ball", num_frames=frames, width=size, height=size, num_inference_steps=steps,
                                     seed=0, callback=callback).frames


def test_driving_video_stage_pauses_steps_and_shows_in_the_viewer(tmp_path, tiny_t2v):
    pytest.importorskip("viser", reason="viewer extra not installed")
    from text4d.errors import Text4DError
    from text4d.recording import RunFolder
    from text4d.render.camera import orbit_c2w
    from text4d.session import Session, SessionConfig
    from text4d.stages.video import DrivingVideoStage
    from viewer.config import ViewerConfig
    from viewer.frames import FrameRenderer
    from viewer.render_worker import ViewRequest
    from viewer.viser_app import ViewerApp

    previews = []
    stage = DrivingVideoStage(_t2v_job(tiny_t2v), steps=3, num_frames=3, on_preview=previews.append)
    assert stage.iters == 4 and stage.status() == "generating driving video: starting (3 steps)"
    session = Session(stage, RunFolder.create("video", tmp_path), SessionConfig(log_every=1, eval_every=0), start_paused=True, exporters={}).start()
    app = ViewerApp(session, ViewerConfig(port=0)).start()
    try:
        session.step(1).result()
        stats = session.wait(lambda s: s.iteration == 1 and s.steps_left == 0, timeout=30)
        assert stats.state == "paused" and len(previews) == 1 and not stage.done  # paused: the generation waits
        app._update_stats()
        assert "generating driving video: step 1/3" in app.stats_md.content
        frames = FrameRenderer(session)
        req = lambda t: ViewRequest(orbit_c2w(10.0, 20.0, 2.5).numpy(), 0.8, 1.0, t, "rgb", 48, "still")  # noqa: E731
        noisy = frames(req(0.0), 48, 32)
        assert noisy.shape == (32, 48, 3) and noisy.std() > 0
        session.snapshot().result()
        session.resume().result()
        stats = session.wait(lambda s: s.state == "finished", timeout=60)
        assert stats.iteration == 4 and stage.done and stage.frames.shape == (3, 16, 16, 3)
        assert [p.step for p in previews] == [1, 2, 3, 3] and previews[-1].final
        app._update_stats()
        assert "driving video: 3 frames, done" in app.stats_md.content
        app._update_plots()  # no loss terms: no loss plot, no failure
        with pytest.raises(Text4DError, match="cannot be rolled back"):  # refused, the video stays
            session.rollback().result(timeout=10)
        assert stage.done and session.stats().iteration == 4
        # The timeline shows the decoded frames: frame 0 and frame 2 are different pictures.
        assert not np.array_equal(frames(req(0.0), 48, 32), frames(req(1.0), 48, 32))
    finally:
        app.stop()
        session.stop()
        stage.close()


def test_closing_an_unfinished_driving_video_cancels_it(tiny_t2v):
    from text4d.stages.video import DrivingVideoStage

    stage = DrivingVideoStage(_t2v_job(tiny_t2v, steps=4), steps=4, num_frames=3)
    stage.step()
    stage.close()
    assert not stage._thread.is_alive() and not stage.done and stage.iteration == 1


def test_driving_video_errors_reach_the_user_as_themselves(tmp_path, tiny_t2v):
    from text4d.errors import InputError

    overrides = ["prompt=a ball", "t2v=unused", "num_frames=2", "video_size=18", "video_steps=2", f"out={tmp_path}", "device=cpu"]
    with pytest.raises(InputError, match="multiples of 4"):  # raised in the generation thread, shown as the plain error
        run(None, overrides, ui="none", console=Console(quiet=True), models={"t2v": tiny_t2v})


def test_image_run_previews_the_svd_video(tmp_path, svd_dir):  # noqa: F811
    from PIL import Image


    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[10:30, 12:28] = (30, 160, 40, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "in.png")
    cfg = ChainRun(image=str(tmp_path / "in.png"), svd=str(svd_dir), num_frames=2, video_size=32, video_steps=2, device="cpu")
    previews = []
    _driving_video(cfg, tmp_path / "video", torch.device("cpu"), {}, Console(quiet=True), on_preview=previews.append)
    assert len(list((tmp_path / "video" / "frames").glob("*.png"))) == 2
    # SVD latents are [B, F, C, h, w]: two frames of latent-sized pictures, then the decoded 32 px frames.
    assert [(p.step, p.final, tuple(p.frames.shape)) for p in previews] == [(1, False, (2, 16, 16, 3)), (2, False, (2, 16, 16, 3)), (2, True, (2, 32, 32, 3))]
