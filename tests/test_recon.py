"""Reconstruction from a D-NeRF-layout scene: scene bounds, init, stage, live fit, reopen, CLI, bench."""

from __future__ import annotations

import json
import math
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from text4d.app.kinds import open_run
from text4d.app.recon import ReconRun, fit_scene
from text4d.config import load_config
from text4d.errors import ConfigError
from text4d.export.video import side_by_side_frames
from text4d.gaussians.hull import project, scene_sphere, visual_hull
from text4d.io.dnerf import read_dnerf
from text4d.recon import build_recon_stage, export_sample_dnerf, sample_splits, scene_for_rendering
from text4d.render.camera import Cameras
from text4d.samples import render_views

SCENE = {"n_train": 24, "n_val": 2, "n_test": 3, "resolution": 32}
TINY = ["device=cpu", "backend=torch", "init_points=400", "static_iters=4", "iters=6", "batch_size=2", "densify.start=2", "densify.interval=4", "hull_resolution=24"]


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    return export_sample_dnerf(tmp_path_factory.mktemp("scene") / "sample", **SCENE)


def test_scene_sphere_of_orbit_cameras():
    cams = Cameras.orbit(torch.tensor([10.0, 40.0, 70.0, 20.0]), torch.tensor([0.0, 100.0, 200.0, 300.0]), 3.0, 40.0, 64, 48)
    centre, radius = scene_sphere(cams)
    assert centre.abs().max() < 1e-4
    half_fov = math.atan(0.5 * 48 / cams.Ks[0, 1, 1].item())  # the narrower (vertical) one
    assert radius == pytest.approx(3.0 * math.sin(half_fov), rel=1e-4)


def test_visual_hull_hugs_the_creature():
    """Hull voxels from the sample's masks lie in the creature's bounding box and reach its surface."""
    sample = scene_for_rendering("creature", 0)
    el = torch.tensor([5.0, 30.0, 60.0, 15.0, 45.0, 80.0] * 3)
    az = torch.arange(18, dtype=torch.float32) * 20.0
    cams = Cameras.orbit(el, az, 2.0, 49.1, 48, 48)
    views = render_views(sample, cams, torch.zeros(18))
    centre, radius = scene_sphere(cams)
    voxels, colours, size = visual_hull(views, centre, radius, resolution=32, min_fraction=1.0)
    verts = sample.mesh_at(0.0).verts
    lo, hi = verts.min(0).values - 2 * size, verts.max(0).values + 2 * size
    assert voxels.shape[0] > 50
    assert ((voxels >= lo) & (voxels <= hi)).all(-1).float().mean() > 0.99
    # ... and the surface lies on the hull (thin parts up to a pixel or two wide may be carved at 48 px).
    gap = torch.cdist(verts, voxels).min(1).values / size  # in voxels
    assert gap.mean() < 1.2 and (gap <= 3.0).float().mean() > 0.95
    # Every kept voxel projects inside the masks of all views (min_fraction=1).
    uv, _ = project(voxels, cams)
    ij = uv.floor().long().clamp(0, 47)
    inside = views.alpha[torch.arange(18)[:, None], ij[..., 1], ij[..., 0], 0]
    assert (inside > 0.3).float().mean() > 0.98
    assert colours.min() >= 0 and colours.max() <= 1


def test_sample_export_cameras(scene_dir):
    scene = read_dnerf(scene_dir)
    assert len(scene.train) == 24 and len(scene.val) == 2 and len(scene.test) == 3
    centres = scene.train.cameras.centers
    assert torch.allclose(centres.norm(dim=-1), torch.full((24,), 2.0), atol=1e-4)
    assert (centres[:, 1] >= -1e-4).all()  # upper hemisphere (y up)
    assert len(torch.unique(scene.train.times)) == 24  # random times, one per image
    assert torch.equal(scene.test.times, torch.linspace(0, 1, 3))
    # Held-out poses: no test camera coincides with a training camera.
    gap = torch.cdist(scene.test.cameras.centers, centres).min()
    assert gap > 0.05
    assert (scene.train.alpha.mean(dim=(1, 2, 3)) > 0.05).all()  # the creature is in every view


def test_config_defaults_presets_and_overrides():
    paths = sorted((Path(__file__).resolve().parents[1] / "configs" / "recon").glob("*.yaml"))
    assert len(paths) >= 2  # dnerf.yaml and its fast preset
    for path in paths:
        cfg = load_config(ReconRun, path, ["static_iters=7", "densify.end=11"])
        assert cfg.static_iters == 7 and cfg.densify.end == 11 and cfg.static_frames == "all" and cfg.bg == "white"
        assert cfg.n_views == 0 and cfg.densify.enabled
    with pytest.raises(ConfigError, match="nosuch"):
        load_config(ReconRun, None, ["nosuch=1"])


def test_stage_fills_bounds_and_size_from_the_data_and_learns(scene_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TEXT4D_CACHE", str(tmp_path))
    # Random init starts far off (hull init starts near the masks; see the next test), so progress shows in a few steps.
    cfg = load_config(ReconRun, None, [f"data={scene_dir}", *TINY, "init=random", "static_iters=8", "iters=6", "batch_size=4", "densify.start=8", "densify.interval=8"])
    stage = build_recon_stage(cfg)
    assert cfg.deform.bound == 0.0 and cfg.ref_size == 0  # the config keeps "auto" ...
    radius = 2.0 * math.sin(math.radians(49.1 / 2))
    assert stage.cfg.deform.bound == pytest.approx(1.25 * radius, rel=1e-3)  # ... the stage gets the values
    assert stage.cfg.ref_size == 32 and stage.field.cfg.bound == stage.cfg.deform.bound
    assert stage.num_frames == 24 and stage.novel is None
    before = stage.evaluate()
    while stage.iteration < stage.iters:
        stage.step()
    after = stage.evaluate()
    assert after["psnr"] > before["psnr"] + 2.5, (before, after)


def test_hull_init_starts_closer_than_random(scene_dir):
    scores = {}
    for init in ("hull", "random"):
        cfg = load_config(ReconRun, None, [f"data={scene_dir}", *TINY, f"init={init}"])
        stage = build_recon_stage(cfg)
        scores[init] = stage.evaluate()
    assert scores["hull"]["iou"] > scores["random"]["iou"] + 0.2, scores


def test_test_video_is_prediction_beside_ground_truth(scene_dir):
    cfg = load_config(ReconRun, None, [f"data={scene_dir}", *TINY])
    stage = build_recon_stage(cfg)
    frames = side_by_side_frames(stage, stage.test)
    assert frames.shape == (3, 32, 64, 3)
    gt = (stage.test.composite(torch.ones(3)) * 255).round().to(torch.uint8)
    assert torch.equal(torch.from_numpy(frames[:, :, 32:]), gt)  # test times are already sorted
    pred = stage.render(stage.test.cameras[0:1], 0.0).rgb[0]
    assert torch.equal(torch.from_numpy(frames[0, :, :32]), (pred.clamp(0, 1) * 255).round().to(torch.uint8))


def test_headless_fit_writes_metrics_and_test_video_then_reopens(scene_dir, tmp_path):
    overrides = [*TINY, f"out={tmp_path}", "session.eval_every=5", "session.log_every=5"]
    run_path = fit_scene(scene_dir, ui="none", overrides=[*overrides, "exports=[test-video]"], console=Console(quiet=True))
    records = [json.loads(line) for line in (run_path / "metrics.jsonl").read_text().splitlines()]
    last = records[-1]
    assert last["iteration"] == 10 and {"test_psnr", "test_ssim", "test_iou"} <= set(last)
    assert json.loads((run_path / "manifest.json").read_text())["kind"] == "recon"
    video = next((run_path / "exports").glob("test-it*.mp4"))
    frames = iio.imread(video)
    assert frames.shape[0] == 3 and frames.shape[1:3] == (32, 64)
    opened = open_run(run_path)
    session, cfg = opened.session, opened.cfg
    assert opened.kind.name == "recon" and session.stage.iteration == 10 and cfg.data == str(scene_dir.resolve())
    assert type(session.stage).__name__ == "DynamicStage" and len(session.stage.reference) == 24
    assert {"test-video", "mp4", "ply-seq", "glb"} <= set(session.exporters)


def test_cli_sample_export_and_fit_arguments(tmp_path):
    from cli import app

    runner = CliRunner()
    out = tmp_path / "exported"
    result = runner.invoke(app, ["sample", "export", "--format", "dnerf", str(out), "--train", "3", "--val", "0", "--test", "1", "--resolution", "16"])
    assert result.exit_code == 0, result.output
    scene = read_dnerf(out)
    assert len(scene.train) == 3 and scene.val is None and len(scene.test) == 1 and scene.train.width == 16
    bad = runner.invoke(app, ["sample", "export", "--format", "colmap", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "dnerf" in str(bad.exception)
    both = runner.invoke(app, ["fit", "--sample", "--data", str(out)])
    assert both.exit_code != 0 and "--data" in str(both.exception)


def test_sample_splits_are_deterministic():
    a = sample_splits(n_train=2, n_val=0, n_test=1, resolution=8, seed=3)
    b = sample_splits(n_train=2, n_val=0, n_test=1, resolution=8, seed=3)
    assert torch.equal(a["train"].rgb, b["train"].rgb) and torch.equal(a["train"].times, b["train"].times)
    assert "val" not in a


def test_bench_tiny_reports_the_numbers(tmp_path):
    from text4d.app.bench.recon import run

    overrides = ["backend=torch", "static_iters=2", "iters=2", "init_points=200", "hull_resolution=16"]
    result = run(overrides=overrides, device="cpu", target_psnr=5.0, eval_every=1, resolution=24, n_train=8, n_test=2, render_resolution=32)
    assert result["scene"]["train_images"] == 8 and result["scene"]["resolution"] == [24, 24]
    assert result["iterations"] == 4 and result["render_fps"] > 0 and result["iterations_per_second"] > 0
    assert result["seconds_to_target"] is not None and 0 < result["final"]["psnr"] < 60


def test_bench_compare_models_on_both_scenes_writes_json_and_picture(tmp_path):
    from text4d.app.bench.recon import compare

    root = Path(__file__).resolve().parents[1] / "configs" / "recon"
    overrides = ["backend=torch", "static_iters=2", "iters=3", "init_points=200", "hull_resolution=16", "deform.control_points.num=16", "deform.control_points.width=16",
                 "deform.hash_grid.levels=3", "deform.hash_grid.log2_table=10", "deform.hash_grid.width=16"]
    configs = [root / "dnerf_fast.yaml", root / "dnerf_sc.yaml", root / "dnerf_grid4d.yaml"]
    result = compare(configs, ("creature", "whirligig"), overrides=overrides, device="cpu", eval_every=2, resolution=24, n_train=6, n_test=2, render_resolution=16, out=tmp_path)
    assert json.loads((tmp_path / "recon_compare.json").read_text())["scenes"].keys() == {"creature", "whirligig"}
    for entry in result["scenes"].values():
        assert entry["baseline"] == "dnerf_fast" and entry["best"] in entry["runs"]
        assert {run["model"] for run in entry["runs"].values()} == {"hexplane", "control_points", "hash_grid"}
        assert all(run["iterations"] == 5 and run["gaussians"] > 0 for run in entry["runs"].values())
        picture = iio.imread(entry["picture"])
        assert picture.shape == (24, 72, 3)  # baseline | best | ground truth
    short = compare(configs[:1], ("creature",), overrides=[*overrides, "iters=500"], device="cpu", eval_every=100, resolution=24, n_train=6, n_test=2,
                    render_resolution=16, budget_seconds=1.0)
    run = short["scenes"]["creature"]["runs"]["dnerf_fast"]
    assert run["iterations"] < 502 and run["psnr_curve"][-1]["iteration"] == run["iterations"]  # cut by the budget, scored where it stopped
