"""Replay: a run with scripted edits (and a reopen) re-executes bit-exactly; damaged run folders are reported."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

import text4d.app.sample
from tests.support.cli import invoke
from tests.support.sample import TINY_SAMPLE, memoised_by_config
from text4d.app.kinds import open_run
from text4d.app.replay import compare_metrics, compare_states, replay
from text4d.app.runkind import load
from text4d.app.runs import find_runs, summarize
from text4d.config import to_yaml
from text4d.errors import InputError
from text4d.recording import INITIAL, RunFolder
from text4d.session import Session

OVERRIDES = ["static_iters=2", "iters=8", "densify.start=3", "densify.interval=3", "session.log_every=1", "session.eval_every=4", "session.good_snapshot_every=2"]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A run made like `text4d demo` then `text4d view`, with edits from both sessions (one CPU thread)."""
    root = tmp_path_factory.mktemp("recordings")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    patch = pytest.MonkeyPatch()
    patch.setenv("TEXT4D_CACHE", str(tmp_path_factory.mktemp("cache")))
    # The sample's creature takes seconds to build; every stage built in this module shares one.
    patch.setattr(text4d.app.sample, "load_sample", memoised_by_config(text4d.app.sample.load_sample))
    try:
        cfg = load(text4d.app.sample.KIND, None, TINY_SAMPLE + OVERRIDES + [f"out={root}"])
        run = RunFolder.create("scripted", root)
        run.write_config(to_yaml(cfg))
        run.update_manifest(kind="sample")
        session = Session(text4d.app.sample.build_sample_stage(cfg, torch.device("cpu")), run, cfg.session, start_paused=True)
        session.start()
        try:
            session.step(2).result(30)
            session.wait(lambda s: s.steps_left == 0 and s.iteration == 2, 120)
            session.set("lambda_alpha", 2000.0).result(30)
            session.snapshot().result(30)
            session.step(2).result(30)
            session.wait(lambda s: s.steps_left == 0 and s.iteration == 4, 120)
            session.crop((-0.2, -0.2, -0.2), (0.2, 0.2, 0.2), t=0.5).result(30)
            session.set("lr_grid", 1e-2).result(30)
            session.step(1).result(30)
            session.wait(lambda s: s.steps_left == 0 and s.iteration == 5, 120)
            session.rollback().result(30)  # back to iteration 2, edits stay
            session.prune_opacity(0.02).result(30)
            session.step(3).result(30)
            session.wait(lambda s: s.steps_left == 0 and s.iteration == 5, 120)
        finally:
            session.stop()
        # A later session on the same run (what `text4d view` does), with an override and more edits.
        reopened = open_run(run.path, ["lambda_novel=5000"]).session
        reopened.start()
        try:
            reopened.set("lambda_rgb", 5000.0).result(30)
            reopened.step(3).result(30)
            reopened.wait(lambda s: s.steps_left == 0 and s.iteration == 8, 120)
        finally:
            reopened.stop()
        yield run
    finally:
        patch.undo()
        torch.set_num_threads(threads)


def test_replay_reproduces_edits_bit_exactly(recorded, tmp_path):
    edits = [e["command"] for e in recorded.edits() if e["ok"]]
    assert edits.count("open") == 2 and {"set", "snapshot", "crop", "rollback", "prune_opacity"} <= set(edits)
    threads = torch.get_num_threads()
    result = replay(recorded.path, out=tmp_path)
    assert torch.get_num_threads() == threads  # the recorded count was used and then restored
    assert result.threads == 1 and result.iteration == 8
    assert result.bit_exact and result.reproduced, result
    assert result.edits_applied == 8  # 3 sets, snapshot, crop, rollback, prune, and the second session's open
    assert result.metrics_compared >= 8 and result.metrics_max_abs_diff == 0.0 and result.first_metric_divergence is None
    report = json.loads((tmp_path / result.replay.split("/")[-1] / "replay.json").read_text())
    assert report["reproduced"] is True
    # The replay is itself a replayable run folder and is listed as a replay of the original.
    again = RunFolder.open(result.replay)
    assert again.has_checkpoint(INITIAL) and again.edits()[0]["command"] == "open"
    assert summarize(again).replay_of == str(recorded.path)


def test_a_different_edit_is_caught(recorded, tmp_path):
    """The comparison can fail: replaying a recording whose edit value was changed is not reproduced."""
    tampered = RunFolder(shutil.copytree(recorded.path, tmp_path / "tampered"))
    text = tampered.edits_path.read_text()
    assert '"value": 2000.0' in text
    tampered.edits_path.write_text(text.replace('"value": 2000.0', '"value": 2500.0', 1))
    result = replay(tampered.path, out=tmp_path)
    assert not result.bit_exact and not result.reproduced and result.max_abs_diff > 0
    assert result.first_metric_divergence == 3  # the first step after the edit at iteration 2


def test_a_run_killed_after_its_checkpoint_replays_to_that_checkpoint(recorded, tmp_path):
    """kill -9 leaves records of iterations after the latest checkpoint; a replay follows the run the checkpoint holds."""
    crashed = RunFolder(shutil.copytree(recorded.path, tmp_path / "crashed"))
    crashed.log_metrics({"iteration": 9, "loss": 1.0})
    crashed.log_edit({"iteration": 9, "command": "set", "args": {"key": "lambda_rgb", "value": 1.0}, "ok": True})
    result = replay(crashed.path, out=tmp_path)
    assert result.bit_exact and result.reproduced and result.iteration == 8, result
    assert max(r["iteration"] for r in crashed.metrics()) == 8 and crashed.edits()[-1]["command"] != "set"


def test_state_and_metric_comparisons_catch_one_ulp():
    a = {"w": torch.ones(3), "it": 4, "opt": [torch.zeros(2)]}
    b = {"w": torch.ones(3).nextafter(torch.full((3,), 2.0)), "it": 4, "opt": [torch.zeros(2)]}
    exact, diff, bad = compare_states(a, b)
    assert not exact and 0 < diff < 1e-6 and not bad
    assert compare_states(a, {**a, "it": 5})[2] == ["/it 4 vs 5"]
    assert compare_states(a, {**a, "w": torch.ones(4)})[1] == math.inf
    count, worst, first = compare_metrics([{"iteration": 1, "loss": 1.0}, {"iteration": 2, "loss": 2.0}], [{"iteration": 1, "loss": 1.0}, {"iteration": 2, "loss": 2.5}])
    assert (count, worst, first) == (2, 0.5, 2)


def test_damaged_run_is_reported_and_what_is_intact_still_opens(recorded, tmp_path):
    damaged = RunFolder(shutil.copytree(recorded.path, tmp_path / "damaged"))
    lines = damaged.metrics_path.read_text().splitlines()
    lines[1] = '{"iteration": 2, "loss": '  # a corrupt line in the middle
    damaged.metrics_path.write_text("\n".join(lines) + "\n")
    (damaged.checkpoint_dir / f"{INITIAL}.safetensors").unlink()
    damaged.manifest_path.write_text("{not json")

    health = damaged.health()
    assert any("metrics.jsonl: 1 corrupt line(s) skipped (first at line 2)" in p for p in health.problems)
    assert any(f"checkpoints/{INITIAL} is incomplete: {INITIAL}.safetensors is missing" in p for p in health.problems)
    assert any("manifest.json is corrupt" in p for p in health.problems)
    assert len(damaged.metrics()) == len(lines) - 1  # every intact record still reads
    row = next(r for r in find_runs(tmp_path) if r.path == damaged.path)
    assert row.problems == tuple(health.problems) and row.iteration == 8 and row.best.startswith("PSNR")
    with pytest.raises(InputError, match=f"no complete checkpoints/{INITIAL}"):
        replay(damaged.path, out=tmp_path / "out")
    # The latest checkpoint is intact, so the run still reopens (with the loss curve minus the bad line).
    session = open_run(damaged.path).session
    assert session.stats().iteration == 8 and len(session.history()) == len(lines) - 1


def test_run_without_replay_data_is_refused_with_a_reason(recorded, tmp_path):
    bare = RunFolder(shutil.copytree(recorded.path, tmp_path / "bare"))
    bare.edits_path.write_text("\n".join(line for line in bare.edits_path.read_text().splitlines() if '"open"' not in line) + "\n")
    with pytest.raises(InputError, match="does not start with the session's 'open' record"):
        replay(bare.path, out=tmp_path / "out")


# Big enough that the rasteriser's gathers reach torch's parallel CPU path (>= 32768 elements a call): with two
# threads their backward adds in a racy order unless the session trains with deterministic kernels.
PARALLEL = ["init_points=1000", "session.log_every=1", "session.eval_every=2", "video_frames=2", "video_resolution=16"]


def replay_verdict(run_path, out):
    code, output = invoke("replay", run_path, "--out", out)
    report = json.loads(next(out.glob("*/replay.json")).read_text())
    return code, output, report


def test_demo_with_overrides_and_steps_replays_bit_exactly_on_two_threads(tmp_path, monkeypatch, two_threads):
    """What a user does: `text4d demo --ui none --steps N key=value ...` with two threads, then `text4d replay`."""
    monkeypatch.setenv("TEXT4D_CACHE", str(tmp_path / "cache"))
    overrides = [*TINY_SAMPLE, *PARALLEL, "static_iters=2", "iters=6", "densify.start=2", "densify.interval=2", "densify.end=5", f"out={tmp_path / 'rec'}"]
    code, output = invoke("demo", "--ui", "none", "--steps", "5", *overrides)
    assert code == 0, output
    (run_path,) = (tmp_path / "rec").iterdir()
    opened = RunFolder(run_path).edits()[0]
    assert opened["command"] == "open" and opened["args"]["threads"] == 2 and opened["args"]["deterministic"]
    code, output, report = replay_verdict(run_path, tmp_path / "replays")
    assert code == 0 and report["bit_exact"] and report["threads"] == 2 and report["iteration"] == 5, output
    assert report["metrics_compared"] == 5 and report["metrics_max_abs_diff"] == 0.0 and report["first_metric_divergence"] is None


def test_fit_data_run_replays_bit_exactly_on_two_threads(tmp_path, two_threads):
    """`text4d fit --data SCENE --steps N key=value ...` (a D-NeRF reconstruction) replays exactly too."""
    from text4d.recon import export_sample_dnerf

    scene = export_sample_dnerf(tmp_path / "scene", n_train=8, n_val=0, n_test=1, resolution=32)
    overrides = ["device=cpu", "backend=torch", "init_points=1000", "hull_resolution=24", "static_iters=2", "iters=4", "batch_size=4",
                 "densify.start=2", "densify.interval=2", "session.log_every=1", "session.eval_every=2", "video_frames=2",
                 "video_resolution=16", f"out={tmp_path / 'rec'}"]
    code, output = invoke("fit", "--data", scene, "--steps", "4", *overrides)
    assert code == 0, output
    (run_path,) = (tmp_path / "rec").iterdir()
    assert RunFolder(run_path).edits()[0]["args"]["deterministic"]
    code, output, report = replay_verdict(run_path, tmp_path / "replays")
    assert code == 0 and report["bit_exact"] and report["iteration"] == 4, output
    assert report["metrics_compared"] == 4 and report["first_metric_divergence"] is None
