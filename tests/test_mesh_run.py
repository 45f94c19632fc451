"""``text4d export`` on real run folders (the tiny dynamic stage, a few iterations): files, frames, bad input."""

from __future__ import annotations

import shutil

import pytest
from rich.console import Console
from typer.testing import CliRunner

from tests.support.sample import TINY_SAMPLE
from text4d.app.export import export_run
from text4d.errors import ConfigError, InputError

pytest.importorskip("xatlas")
FAST = ["--resolution", "32", "--texture", "64", "bake_resolution=32", "bake_views=2", "max_faces=2000"]


def _train(root, steps: int, static_iters: int):
    from text4d.app.sample import demo

    return demo(ui="none", steps=steps, overrides=TINY_SAMPLE + [f"out={root}", f"static_iters={static_iters}", "iters=10", "name=mesh", "exports=[]"], console=Console(quiet=True))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("recordings"), steps=3, static_iters=1)


def test_cli_exports_an_obj_sequence_and_a_glb_from_a_run(run_dir, tmp_path):
    from cli import app

    out = tmp_path / "seq"
    res = CliRunner().invoke(app, ["export", str(run_dir), "--format", "obj-seq", "--frames", "0:2", "--out", str(out), *FAST, "name=blob"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert sorted(p.name for p in out.iterdir()) == ["blob_000.mtl", "blob_000.obj", "blob_000.png", "blob_001.mtl", "blob_001.obj", "blob_001.png"]
    res = CliRunner().invoke(app, ["export", str(run_dir), "--format", "glb", *FAST])
    assert res.exit_code == 0, res.output + repr(res.exception)
    glb = run_dir / "exports" / "mesh-it000003.glb"
    assert glb.read_bytes()[:4] == b"glTF"
    assert [p.name for p in (run_dir / "exports").iterdir() if p.name.startswith(".")] == []


def test_run_without_checkpoint_is_a_clear_error(run_dir, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run_dir / "config.yaml", bare / "config.yaml")
    with pytest.raises(InputError, match="no trained model"):
        export_run(bare, "glb")
    assert not (bare / "exports").exists()


def test_run_stopped_before_the_deformation_trained_is_a_clear_error(tmp_path):
    run = _train(tmp_path, steps=1, static_iters=5)
    with pytest.raises(InputError, match="before its deformation started training"):
        export_run(run, "obj-seq")
    assert not (run / "exports").exists()


def test_bad_format_and_frames_are_config_errors(run_dir):
    with pytest.raises(ConfigError, match="--format"):
        export_run(run_dir, "fbx")
    with pytest.raises(ConfigError, match="outside the clip"):
        export_run(run_dir, "glb", frames="0,5")
