"""Run folders over a command's life: none left by a command that fails before training, SIGTERM saves the run
as Ctrl-C does, and a headless view of a finished run does not rewrite its exports."""

from __future__ import annotations

import numpy as np
import pytest
from rich.console import Console

from tests.support.cli import run_cli
from tests.support.sample import TINY_SAMPLE
from text4d.errors import Text4DError


def rgba_frames(folder, count=2, size=24):
    """A tiny driving video: a coloured disc on transparency, ``000.png``, ``001.png``..."""
    from text4d.io.media import write_rgba_frames

    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2).astype(np.float32)
    rgb = np.stack([np.stack([disc * 0.8, disc * 0.3, disc * (0.2 + 0.3 * i)], -1) for i in range(count)])
    write_rgba_frames(folder, rgb, np.stack([disc] * count))
    return folder


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One sample cache for the module (rendering the sample costs seconds); also for subprocesses."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    frames = rgba_frames(root / "frames")
    return {"frames": frames, "image": frames / "000.png", "missing": root / "no-such-model"}


def leftovers(out):
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


@pytest.mark.parametrize("command", [
    pytest.param(lambda i, out: ("demo", "--ui", "none", *TINY_SAMPLE, "no_such_key=1", f"out={out}"), id="demo-bad-key"),
    pytest.param(lambda i, out: ("fit", "--sample", *TINY_SAMPLE, "sample.resolution=0", f"out={out}"), id="fit-sample-bad-value"),
    pytest.param(lambda i, out: ("fit", "--data", i["missing"], f"out={out}"), id="fit-data-missing-scene"),
    pytest.param(lambda i, out: ("static", "--image", i["missing"], f"out={out}"), id="static-missing-image"),
    pytest.param(lambda i, out: ("static", "--image", i["image"], "--zero123", i["missing"], "--ui", "none", f"out={out}"), id="static-missing-zero123"),
    pytest.param(lambda i, out: ("animate", "--frames", i["frames"], "--zero123", i["missing"], "device=cpu", f"out={out}"), id="animate-missing-zero123"),
    pytest.param(lambda i, out: ("run", "--video", i["frames"], "--zero123", i["missing"], "--set", f"out={out}", "--set", "device=cpu"), id="run-missing-zero123"),
])
def test_a_command_failing_before_training_leaves_no_run_folder(inputs, tmp_path, command):
    out = tmp_path / "recordings"
    result = run_cli(*command(inputs, out))
    assert result.exit_code != 0 and isinstance(result.exception, Text4DError), result.exception
    assert leftovers(out) == []


@pytest.mark.parametrize("kind", ["sample", "dnerf"])
def test_a_failure_after_the_folder_exists_removes_it_until_training_wrote_something(tmp_path, monkeypatch, cache, kind):
    """A job's bad export list (text4d batch passes it through) fails in the session driver, after the folder was made."""
    from text4d.app.recon import fit_scene
    from text4d.app.sample import demo
    from text4d.recon import export_sample_dnerf

    monkeypatch.setenv("TEXT4D_CACHE", str(cache))
    out = tmp_path / "recordings"
    quiet = Console(quiet=True)
    with pytest.raises(Text4DError, match="unknown export"):
        if kind == "sample":
            demo(ui="none", overrides=[*TINY_SAMPLE, "iters=2", "static_iters=0", f"out={out}", "exports=[nope]"], console=quiet)
        else:
            scene = export_sample_dnerf(tmp_path / "scene", n_train=3, n_val=0, n_test=1, resolution=16)
            fit_scene(scene, overrides=["device=cpu", "backend=torch", "init_points=50", "hull_resolution=8", "iters=2", "static_iters=0",
                                        f"out={out}", "exports=[nope]"], console=quiet)
    assert leftovers(out) == []


def test_only_an_unused_folder_this_command_created_is_removed(tmp_path):
    from text4d.recording import RunFolder

    def fail(run):
        with pytest.raises(KeyboardInterrupt), run.discard_if_unused():
            run.write_config("iters: 1\n")
            raise KeyboardInterrupt  # Ctrl-C (or SIGTERM) while the stage loads

    unused = RunFolder.create("unused", tmp_path)
    fail(unused)
    trained = RunFolder.create("trained", tmp_path)
    trained.log_metrics({"iteration": 1, "loss": 1.0})
    fail(trained)
    named = RunFolder(tmp_path / "named")  # run_dir=...: the user's folder
    named.path.mkdir()
    fail(named)
    assert not unused.path.exists() and trained.path.exists() and named.path.exists()


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("ui", ["none", "viser"])
def test_sigterm_saves_the_run_as_ctrl_c_does(cache, tmp_path, ui):
    """`kill PID` (systemd, docker stop, a scheduler) during training: the session stops, checkpoints and reopens."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from text4d.app.kinds import open_run

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1",
           "TEXT4D_CACHE": str(cache)}
    out = tmp_path / "recordings"
    front = ["--ui", "none"] if ui == "none" else ["--ui", "viser", "--port", str(free_port())]
    proc = subprocess.Popen([sys.executable, "-c", "import cli; cli.main()", "demo", *front, *TINY_SAMPLE, "iters=100000", "static_iters=0",
                             "session.log_every=1", "session.eval_every=0", f"out={out}"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("*/metrics.jsonl")) or len(next(out.glob("*/metrics.jsonl")).read_text().splitlines()) < 3:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() is not None else "no progress"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, output
    (run,) = out.iterdir()
    saved = json.loads((run / "checkpoints" / "latest.json").read_text())["session"]
    assert saved["reason"] == "stop" and saved["iteration"] >= 3, output
    session = open_run(run).session
    assert session.stats().iteration == saved["iteration"] and session.stats().state == "paused"
    assert [r["iteration"] for r in session.history()] == list(range(1, saved["iteration"] + 1))
