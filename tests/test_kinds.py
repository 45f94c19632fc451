"""Every run kind, end to end as a user meets it: make a tiny run, list it, reopen it headless,
export it in every format it offers, replay it bit-exactly on CPU.

Runs are made through the same functions the commands call (``text4d demo`` / ``fit --data`` /
``static`` / ``animate`` / ``run``), on one CPU thread so the replays are exact.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console

from tests.support.media import write_clip
from tests.support.sample import TINY_SAMPLE
from text4d.app.export import export_run
from text4d.app.kinds import kind_of, open_run
from text4d.app.replay import replay_runs
from text4d.app.runs import find_runs
from text4d.errors import InputError
from text4d.recording import RunFolder

pytestmark = pytest.mark.slow

QUIET = Console(quiet=True)
SESSION = ["session.eval_every=2", "session.log_every=1", "exports=[]"]
TINY_STATIC = ["ref_size=16", "resolutions=[16,16,16]", "num_pts=100", "init_radius=0.4", "iters=4", "size=32", "backend=torch", "device=cpu"]
TINY_DYNAMIC = ["ref_size=16", "resolutions=[16,16,16]", "batch_size=2", "n_views=0", "iters=4", "init_points=100", "backend=torch", "device=cpu"]


def image(folder: Path) -> Path:
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[8:24, 10:22] = (200, 60, 30, 255)
    Image.fromarray(rgba, "RGBA").save(folder / "in.png")
    return folder / "in.png"


def make_sample(root: Path) -> Path:
    from text4d.app.sample import demo

    return demo(ui="none", overrides=[*TINY_SAMPLE, "iters=4", "static_iters=2", f"out={root}", *SESSION], console=QUIET)


def make_recon(root: Path) -> Path:
    from text4d.app.recon import fit_scene
    from text4d.recon import export_sample_dnerf

    scene = export_sample_dnerf(root.parent / "scene", n_train=6, n_val=0, n_test=2, resolution=16)
    return fit_scene(scene, overrides=["device=cpu", "backend=torch", "init_points=100", "hull_resolution=8", "iters=4", "static_iters=2",
                                       "batch_size=2", f"out={root}", *SESSION], console=QUIET)


def make_static(root: Path) -> Path:
    from text4d.app.static import static

    return static(overrides=[f"image={image(root.parent)}", *TINY_STATIC, f"out={root}", *SESSION], console=QUIET).parent


def make_animate(root: Path) -> Path:
    from text4d.app.animate import animate

    clip = write_clip(root.parent / "clip", 3)
    return animate(overrides=[f"frames={clip}", *TINY_DYNAMIC, f"out={root}", *SESSION], console=QUIET)


def make_chain(root: Path) -> Path:
    from text4d.app.chain import run

    clip = write_clip(root.parent / "clip", 3)
    return run(overrides=[f"video={clip}", f"out={root}", "device=cpu", "exports=[]", *(f"static.{o}" for o in [*TINY_STATIC, *SESSION]),
                          *(f"dynamic.{o}" for o in [*TINY_DYNAMIC, *SESSION])], console=QUIET)


MAKERS = {"sample": make_sample, "recon": make_recon, "static": make_static, "animate": make_animate, "chain": make_chain}


@pytest.mark.parametrize("kind", list(MAKERS))
def test_a_run_of_every_kind_lists_reopens_exports_and_replays(kind, tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("TEXT4D_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "recordings"
    path = MAKERS[kind](root)

    assert json.loads((path / "manifest.json").read_text())["kind"] == kind and kind_of(RunFolder(path)).name == kind
    (listed,) = [r for r in find_runs(root) if r.path == path]
    assert listed.kind == kind and listed.iteration is not None and listed.problems == ()

    opened = open_run(path)
    session = opened.session
    assert opened.kind.name == ("animate" if kind == "chain" else kind)  # a chain reopens its newest trained stage
    offered = set(session.exporters)
    assert {"ply-seq", "mp4", "gif", "viser", "obj-seq", "glb"} <= offered
    assert ("test-video" in offered) == (kind in ("sample", "recon"))  # runs with held-out views
    session.start()
    try:
        for fmt in sorted(offered - {"obj-seq", "glb"}):
            assert session.export(fmt).result(300).exists(), fmt
    finally:
        session.stop()
    for fmt in ("obj-seq", "glb"):  # meshes at a test size, through `text4d export`
        assert export_run(path, fmt, resolution=24, texture=32, overrides=["bake_resolution=32", "bake_views=2", "max_faces=500"], console=QUIET).exists()

    results = replay_runs(path, out=tmp_path / "replays")
    assert results and all(r.bit_exact and r.reproduced for r in results), [(r.original, r.max_abs_diff, r.mismatched) for r in results]
    assert len(results) == (2 if kind == "chain" else 1)  # a chain replays its static and dynamic stages
    for result in results:
        assert open_run(result.replay).session.stats().iteration == result.iteration  # the replay's folder reopens too


def test_runs_without_a_kind_in_their_manifest_are_told_apart_by_their_config(tmp_path):
    """Runs written before kinds were recorded still open."""
    for kind, key in (("sample", "sample"), ("recon", "data"), ("animate", "frames"), ("static", "image"), ("chain", "dynamic_config")):
        run = RunFolder.create(kind, tmp_path)
        run.write_config(f"{key}: x\n")
        assert kind_of(run).name == kind


def test_kinds_without_a_stage_say_why_they_do_not_reopen(tmp_path):
    video = RunFolder.create("video", tmp_path)
    video.update_manifest(kind="video")
    with pytest.raises(InputError, match="driving video is in its frames/ folder"):
        open_run(video.path)
    chain = RunFolder.create("chain", tmp_path)
    chain.write_config("prompt: a fox\n")
    chain.update_manifest(kind="chain")
    with pytest.raises(InputError, match="no trained stage yet"):
        open_run(chain.path)
    unknown = RunFolder.create("newer", tmp_path)
    unknown.update_manifest(kind="hologram")
    with pytest.raises(InputError, match="unknown run kind 'hologram'"):
        open_run(unknown.path)


def test_an_imported_ply_says_there_is_nothing_to_reopen(tmp_path):
    from text4d.app.static import static
    from text4d.gaussians.model import GaussianModel
    from text4d.io.ply import save_ply

    save_ply(tmp_path / "in.ply", GaussianModel.random_ball(20, 0.5, generator=torch.Generator().manual_seed(0)).to_ply())
    model = static(overrides=[f"ply={tmp_path / 'in.ply'}", f"out={tmp_path / 'runs'}"], console=QUIET)
    with pytest.raises(InputError, match="no trained model.*imported .ply"):
        open_run(model.parent)
