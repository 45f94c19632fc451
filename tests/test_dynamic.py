"""The dynamic stage on a tiny version of the built-in sample (CPU, torch rasteriser)."""

import numpy as np
import pytest
import torch

from text4d.app.sample import SampleRun, build_sample_stage
from text4d.config import load_config
from text4d.errors import ConfigError
from text4d.export.ply import export_ply_sequence
from text4d.export.video import export_orbit_video
from text4d.io.ply import load_ply
from text4d.metrics import ssim
from text4d.render.camera import Cameras

TINY = [
    "sample.resolution=32",
    "sample.num_frames=4",
    "sample.train_views=2",
    "sample.test_views=2",
    "ref_size=32",
    "batch_size=4",
    "n_views=2",
    "init_points=400",
    "device=cpu",
    "backend=torch",
    "lambda_novel=10000",
    "ramp_reference=false",
]


def tiny_stage(*extra: str):
    cfg = load_config(SampleRun, None, TINY + list(extra))
    return build_sample_stage(cfg)


def test_fit_improves_held_out_psnr_well_above_initial(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXT4D_CACHE", str(tmp_path))
    stage = tiny_stage("static_iters=60", "iters=60", "densify.start=20", "densify.interval=20", "densify.end=100")
    before = stage.evaluate()
    while stage.iteration < stage.iters:
        losses = stage.step()
        assert np.isfinite(losses["loss"])
    after = stage.evaluate()
    assert after["psnr"] > before["psnr"] + 6.0, (before, after)
    assert after["iou"] > 0.6


CONTROL_POINTS = ("deform.model=control_points", "deform.control_points.num=16", "deform.control_points.width=16", "deform.control_points.depth=1", "lambda_arap=0.1")
HASH_GRID = ("deform.model=hash_grid", "deform.hash_grid.levels=3", "deform.hash_grid.max_resolution=32", "deform.hash_grid.log2_table=10",
             "deform.hash_grid.time_levels=2", "deform.hash_grid.width=16", "lambda_tv=0.1", "lambda_time=0.1")
MODELS = {"hexplane": (), "control_points": CONTROL_POINTS, "hash_grid": HASH_GRID}


@pytest.mark.parametrize("model", list(MODELS))
def test_state_dict_resumes_bit_exactly(tmp_path, monkeypatch, one_thread, model):
    monkeypatch.setenv("TEXT4D_CACHE", str(tmp_path))
    extra = ("static_iters=3", "iters=6", "densify.start=2", "densify.interval=4", *MODELS[model])
    a = tiny_stage(*extra)
    for _ in range(4):
        a.step()
    saved = {k: v for k, v in a.state_dict().items()}
    from text4d.io.checkpoint import load_checkpoint, save_checkpoint

    save_checkpoint(saved, tmp_path / "ck")
    tail_a = [a.step()["loss"] for _ in range(5)]
    b = tiny_stage(*extra)
    b.load_state_dict(load_checkpoint(tmp_path / "ck"))
    assert b.iteration == 4 and b.num_gaussians == saved["model"]["means"].shape[0]
    tail_b = [b.step()["loss"] for _ in range(5)]
    assert tail_a == tail_b
    assert torch.equal(a.model.means, b.model.means)
    for (name, pa), pb in zip(a.field.state_dict().items(), b.field.state_dict().values()):
        assert torch.equal(pa, pb), name
    if model != "hexplane":
        assert b.field.ready and {"control_points": {"arap"}, "hash_grid": {"tv", "time"}}[model] <= set(b.step())


@pytest.mark.parametrize("model", list(MODELS))
def test_deformation_moves_gaussians_over_time(tmp_path, monkeypatch, model, one_thread):
    monkeypatch.setenv("TEXT4D_CACHE", str(tmp_path))
    stage = tiny_stage("static_iters=0", "iters=15", *MODELS[model])
    assert torch.equal(stage.gaussian_centers(0.0), stage.gaussian_centers(1.0))  # identity at init
    for _ in range(15):
        stage.step()
    assert not torch.allclose(stage.gaussian_centers(0.0), stage.gaussian_centers(0.5))
    cam = Cameras.orbit(0.0, 0.0, 1.5, 49.1, 32, 32).reshape(1)
    assert not torch.equal(stage.render(cam, 0.0).rgb, stage.render(cam, 0.5).rgb)


def test_regularisers_are_used_when_weighted(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXT4D_CACHE", str(tmp_path))
    stage = tiny_stage("static_iters=1", "iters=3", "lambda_tv=0.1", "lambda_time=1.0", "lambda_time_l1=0.01")
    first = stage.step()
    assert "tv" not in first  # static warm-up: field off
    terms = stage.step()
    assert terms["tv"] > 0 and "time" in terms and "time_l1" in terms
    plain = tiny_stage("static_iters=0", "iters=2")
    assert not {"tv", "time", "time_l1"} & set(plain.step())
    with pytest.raises(ConfigError, match="lambda_tv has no effect on deform.model=control_points"):
        tiny_stage(*CONTROL_POINTS, "lambda_tv=0.1")


def test_dssim_and_l1_reference_loss(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXT4D_CACHE", str(tmp_path))
    stage = tiny_stage("static_iters=0", "iters=4", "bg=white", "lambda_alpha=0", "lambda_novel=0")
    pred, target = torch.rand(2, 32, 32, 3), torch.rand(2, 32, 32, 3)
    assert stage._rgb_loss(pred, target) == (pred - target).square().mean()
    stage.cfg.rgb_loss, stage.cfg.lambda_dssim = "l1", 0.2
    expected = 0.8 * (pred - target).abs().mean() + 0.2 * (1 - ssim(pred, target).mean())
    assert torch.allclose(stage._rgb_loss(pred, target), expected)
    assert stage._rgb_loss(target, target) < 1e-6


def test_live_weight_edit_changes_loss_terms(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXT4D_CACHE", str(tmp_path))
    stage = tiny_stage("static_iters=0", "iters=4", "bg=white")
    a = stage.step()
    stage.cfg.lambda_rgb = 0.0
    b = stage.step()
    assert a["rgb"] > 0 and b["rgb"] == 0.0


def test_remove_gaussians_and_frozen_static_model(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXT4D_CACHE", str(tmp_path))
    stage = tiny_stage("static_iters=0", "iters=4", "train_gaussians=false")
    n = stage.num_gaussians
    assert stage.remove_gaussians(stage.gaussian_opacities() > -1) == n
    stage = tiny_stage("static_iters=0", "iters=4", "train_gaussians=false")
    mask = torch.zeros(stage.num_gaussians, dtype=torch.bool)
    mask[:10] = True
    assert stage.remove_gaussians(mask) == 10 and stage.num_gaussians == n - 10
    means = stage.model.means.detach().clone()
    stage.step()
    stage.step()
    assert torch.equal(means, stage.model.means)  # frozen: only the field trains


def test_exports_ply_sequence_and_video(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXT4D_CACHE", str(tmp_path))
    stage = tiny_stage("static_iters=0", "iters=5")
    for _ in range(5):
        stage.step()
    seq = export_ply_sequence(stage, tmp_path / "ply", name="creature")
    files = sorted(p.name for p in seq.iterdir())
    assert files == [f"creature_{i:03d}.ply" for i in range(4)]
    first, last = load_ply(seq / files[0]), load_ply(seq / files[2])  # the sample loops: frame 3 == frame 0
    assert first.means.shape == last.means.shape and not np.array_equal(first.means, last.means)
    video = export_orbit_video(stage, tmp_path / "orbit.mp4", num_frames=6, resolution=32)
    import imageio.v3 as iio

    frames = iio.imread(video)
    assert frames.shape == (6, 32, 32, 3)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir() if p.name != ".cache")


@pytest.mark.parametrize("bad", [["iters=-1"], ["lambda_rgb=nan"], ["bg=green"], ["no_such_key=1"]])
def test_bad_config_is_refused(bad):
    from text4d.errors import ConfigError

    with pytest.raises(ConfigError):
        load_config(SampleRun, None, TINY + bad)


def test_field_learning_rates_decay_over_the_dynamic_phase(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXT4D_CACHE", str(tmp_path))
    stage = tiny_stage("static_iters=10", "iters=100", "lr_field_decay=0.1")
    lrs = {}
    for it in (5, 10, 60, 110):
        stage.iteration = it
        stage._apply_learning_rates()
        lrs[it] = {g["name"]: g["lr"] for g in stage.optimizer.param_groups}
    assert lrs[5]["deform"] == 0.0 and lrs[5]["grid"] == 0.0  # static phase: the field is off
    # Step k of the phase (from 1, as the original's update_learning_rate(step)) is at progress k / iters.
    assert lrs[10]["deform"] == pytest.approx(stage.cfg.lr_deform * 0.1**0.01) and lrs[10]["grid"] == pytest.approx(stage.cfg.lr_grid * 0.1**0.01)
    assert lrs[60]["deform"] == pytest.approx(stage.cfg.lr_deform * 0.1**0.51)  # log-linear in progress
    assert lrs[110]["grid"] == pytest.approx(stage.cfg.lr_grid * 0.1)


def test_export_copy_shares_frozen_parts_and_keeps_its_parameters(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXT4D_CACHE", str(tmp_path))
    stage = tiny_stage("static_iters=0")
    stage.step()
    frozen = stage.export_copy()
    assert frozen.novel is stage.novel and frozen.reference is stage.reference and frozen.optimizer is stage.optimizer
    before = frozen.model.means.detach().clone()
    torch.testing.assert_close(before, stage.model.means.detach())
    stage.step()
    assert not torch.equal(stage.model.means.detach(), before)  # training moved on ...
    torch.testing.assert_close(frozen.model.means.detach(), before)  # ... the copy did not


def test_novel_views_step_through_their_resolutions_and_still_feed_densification(tmp_path, monkeypatch):
    """DreamGaussian4D renders novel views at 128 -> 256 -> 512 px (30 % / 60 %): here 16 -> 32 -> 48
    around a 32 px reference, so both the two-call and the one-call render paths run."""
    monkeypatch.setenv("TEXT4D_CACHE", str(tmp_path))
    stage = tiny_stage("iters=10", "resolutions=[16,32,48]", "densify.start=1", "densify.interval=100")
    seen = []
    loss = stage.novel.loss
    stage.novel.loss = lambda out, bg, progress: seen.append(tuple(out.rgb.shape[1:4])) or loss(out, bg, progress)
    for _ in range(10):
        stage.step()
    assert seen == [(2, 16, 16)] * 2 + [(2, 32, 32)] * 3 + [(2, 48, 48)] * 5  # progress = (iteration + 1) / iters
    assert stage.strategy.count.shape[0] == stage.num_gaussians and stage.strategy.count.sum() > 0
