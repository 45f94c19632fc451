import json
import os

import numpy as np
import pytest
import torch

from text4d.errors import InputError
from text4d.io.atomic import atomic_write, read_jsonl
from text4d.io.checkpoint import load_checkpoint, save_checkpoint
from text4d.io.ply import PlyGaussians, load_ply, save_ply
from text4d.recording import RunFolder


def _gaussians(n=50, degree=3, seed=0):
    rng = np.random.default_rng(seed)
    k = (degree + 1) ** 2
    return PlyGaussians(
        rng.normal(size=(n, 3)).astype(np.float32),
        rng.normal(size=(n, k, 3)).astype(np.float32),
        rng.normal(size=n).astype(np.float32),
        rng.normal(size=(n, 3)).astype(np.float32),
        rng.normal(size=(n, 4)).astype(np.float32),
    )


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_ply_round_trip_standard_layout(tmp_path, degree):
    g = _gaussians(degree=degree)
    path = tmp_path / "g.ply"
    save_ply(path, g)
    back = load_ply(path)
    assert back.sh_degree == degree
    for name in ("means", "sh", "opacity_logits", "log_scales", "quats"):
        np.testing.assert_array_equal(getattr(back, name), getattr(g, name))
    from plyfile import PlyData

    names = PlyData.read(str(path))["vertex"].data.dtype.names
    k = (degree + 1) ** 2
    assert names[:9] == ("x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2")
    assert names[-8:] == ("opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")
    assert sum(n.startswith("f_rest_") for n in names) == 3 * (k - 1)


def test_ply_rest_is_channel_major(tmp_path):
    """f_rest_0..K-2 are all red coefficients (the INRIA layout), not interleaved RGB."""
    g = _gaussians(n=2, degree=1)
    save_ply(tmp_path / "g.ply", g)
    from plyfile import PlyData

    v = PlyData.read(str(tmp_path / "g.ply"))["vertex"].data
    np.testing.assert_array_equal([v["f_rest_0"][0], v["f_rest_1"][0], v["f_rest_2"][0]], g.sh[0, 1:, 0])


def test_ply_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_ply(tmp_path / "missing.ply")
    junk = tmp_path / "junk.ply"
    junk.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 10\n")
    with pytest.raises(InputError, match="junk.ply"):
        load_ply(junk)
    g = _gaussians()
    g.means[3, 1] = np.nan
    save_ply(tmp_path / "nan.ply", g)
    with pytest.raises(InputError, match="NaN/Inf in means.*vertex 3"):
        load_ply(tmp_path / "nan.ply")


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(path, "w") as f:
            f.write("new partial")
            raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.txt"]


def test_unwritable_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write"):
        with atomic_write(blocker / "sub" / "out.txt", "w") as f:
            f.write("x")


def test_checkpoint_round_trip_nested_optimizer_state(tmp_path):
    p = torch.nn.Parameter(torch.randn(5, 3))
    opt = torch.optim.Adam([p], lr=0.1)
    p.sum().backward()
    opt.step()
    state = {"iteration": 7, "opt": opt.state_dict(), "rng": torch.get_rng_state(), "pair": (1, "a"), "none": None}
    save_checkpoint(state, tmp_path / "ck")
    back = load_checkpoint(tmp_path / "ck.json")
    assert back["iteration"] == 7 and back["pair"] == (1, "a") and back["none"] is None
    assert torch.equal(back["opt"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    opt2 = torch.optim.Adam([torch.nn.Parameter(torch.zeros(5, 3))], lr=0.1)
    opt2.load_state_dict(back["opt"])
    assert torch.equal(back["rng"], state["rng"])


def test_checkpoint_incomplete_or_corrupt(tmp_path):
    save_checkpoint({"a": torch.ones(2)}, tmp_path / "ck")
    (tmp_path / "ck.safetensors").write_bytes(b"garbage")
    with pytest.raises(InputError, match="corrupt"):
        load_checkpoint(tmp_path / "ck")
    (tmp_path / "ck.json").unlink()
    with pytest.raises(InputError, match="missing"):
        load_checkpoint(tmp_path / "ck")


def test_run_folder_layout_and_torn_jsonl(tmp_path):
    run = RunFolder.create("my run!", root=tmp_path)
    other = RunFolder.create("my run!", root=tmp_path)
    assert run.path != other.path and run.path.name.startswith("my_run")
    run.log_metrics({"iteration": 1, "loss": 2.0})
    run.log_edit({"iteration": 1, "command": "pause"})
    with open(run.metrics_path, "a") as f:
        f.write('{"iteration": 2, "lo')  # a crash mid-line
    assert read_jsonl(run.metrics_path) == [{"iteration": 1, "loss": 2.0}]
    run.mark_stage_done("dynamic")
    run.mark_stage_done("dynamic")
    assert json.loads(run.manifest_path.read_text())["stages_done"] == ["dynamic"]
    run.save_checkpoint({"x": torch.arange(3)}, "latest")
    assert run.has_checkpoint() and torch.equal(run.load_checkpoint()["x"], torch.arange(3))


@pytest.fixture
def umask():
    """Set the process umask for one test (restored after): ``umask(0o022)``."""
    before = os.umask(0o022)
    os.umask(before)
    yield os.umask
    os.umask(before)


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750), (0o077, 0o600, 0o700)])
def test_atomic_writes_get_the_permissions_of_any_new_file(tmp_path, umask, mask, file_mode, dir_mode):
    """A shared run folder is readable as the umask allows: atomic writes are not private (mkstemp's 0600)."""
    from text4d.io.atomic import atomic_dir, atomic_path

    umask(mask)
    run = RunFolder.create("shared", root=tmp_path)
    run.write_config("iters: 1\n")
    run.log_metrics({"iteration": 1, "loss": 1.0})  # a plain append: the reference
    run.save_checkpoint({"x": torch.arange(3)}, "latest")
    with atomic_path(run.exports_dir / "orbit.mp4") as tmp:
        tmp.write_bytes(b"video")  # what a library writing by file name does
    with atomic_dir(run.exports_dir / "ply-it000001") as tmp:
        save_ply(tmp / "frame_000.ply", _gaussians(n=3, degree=0))
    with atomic_dir(run.exports_dir / "ply-it000001") as tmp:  # replacing an existing folder
        save_ply(tmp / "frame_000.ply", _gaussians(n=3, degree=0))

    def mode(p):
        return os.stat(p).st_mode & 0o777

    assert mode(run.metrics_path) == file_mode
    files = [run.manifest_path, run.config_path, run.checkpoint_dir / "latest.json", run.checkpoint_dir / "latest.safetensors",
             run.exports_dir / "orbit.mp4", run.exports_dir / "ply-it000001" / "frame_000.ply"]
    assert {p.name: oct(mode(p)) for p in files} == {p.name: oct(file_mode) for p in files}
    folders = [run.path, run.checkpoint_dir, run.exports_dir, run.exports_dir / "ply-it000001"]
    assert {p.name: oct(mode(p)) for p in folders} == {p.name: oct(dir_mode) for p in folders}
    assert sorted(p.name for p in run.exports_dir.iterdir()) == ["orbit.mp4", "ply-it000001"]  # no temporaries left
