"""Session behaviour on CPU, driven against the tiny deterministic ToyStage."""

from __future__ import annotations

import threading

import pytest
import torch

from tests.support.toy_stage import ToyStage
from text4d.errors import ConfigError, Text4DError
from text4d.recording import RunFolder
from text4d.render.camera import Cameras
from text4d.session import (
    CommandRefused,
    Session,
    SessionConfig,
    SessionEvent,
    clone_state,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # the machine is shared; one thread is plenty for 48 blobs


@pytest.fixture
def run(tmp_path) -> RunFolder:
    return RunFolder.create("session-test", tmp_path)


def make_session(run: RunFolder, stage: ToyStage | None = None, paused: bool = False, **cfg) -> Session:
    cfg.setdefault("log_every", 1)
    cfg.setdefault("eval_every", 0)
    return Session(stage or ToyStage(), run, SessionConfig(**cfg), start_paused=paused).start()


def assert_states_equal(a, b, where="state"):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_states_equal(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_states_equal(x, y, f"{where}/{i}")
    else:
        assert a == b, where


def test_pause_stops_iterations(run):
    session = make_session(run)
    try:
        session.wait(lambda s: s.iteration >= 3)
        session.pause().result(10)
        frozen = session.stats().iteration
        # Each command is a full trip through the optimiser loop; a leaking loop would step in between.
        for _ in range(5):
            session.snapshot().result(10)
            assert session.stage.iteration == frozen
        assert session.stats().state == "paused"
        session.resume().result(10)
        session.wait(lambda s: s.iteration >= frozen + 2)
    finally:
        session.stop()


def test_commands_apply_in_order_between_iterations(run):
    session = make_session(run, paused=True)
    try:
        session.set("lambda_rgb", 2.0)
        session.set("lambda_rgb", 3.0)
        session.set("lambda_alpha", "0")  # typed text converts through the field's type
        session.step(1).result(10)
        session.wait(lambda s: s.iteration == 1)
    finally:
        session.stop()
    opened, *edits = [e for e in run.edits() if e["ok"]]
    assert opened["command"] == "open"  # the session records its own opening first
    assert [(e["command"], e["args"].get("value"), e["iteration"]) for e in edits[:4]] == [
        ("set", 2.0, 0),
        ("set", 3.0, 0),
        ("set", "0", 0),
        ("step", None, 0),
    ]
    assert session.stage.cfg.lambda_rgb == 3.0
    assert session.stats().losses["alpha"] == 0.0 and session.stats().losses["rgb"] > 0.0


def test_weight_change_mid_run_shows_in_loss_terms(run):
    session = make_session(run)
    try:
        session.wait(lambda s: s.iteration >= 4)
        session.set("lambda_alpha", 0.0).result(10)
        applied_at = [e for e in run.edits() if e["command"] == "set"][0]["iteration"]
        session.wait(lambda s: s.iteration >= applied_at + 3)
    finally:
        session.stop()
    history = session.history()
    before = [r["alpha"] for r in history if r["iteration"] <= applied_at]
    after = [r["alpha"] for r in history if r["iteration"] > applied_at]
    assert before and all(v > 0 for v in before)
    assert len(after) >= 3 and all(v == 0.0 for v in after)


def test_snapshot_rollback_restores_exactly(run):
    session = make_session(run, paused=True)
    try:
        session.step(3).result(10)
        session.wait(lambda s: s.iteration == 3)
        session.snapshot().result(10)
        saved = clone_state(session.stage.state_dict())
        session.step(4).result(10)
        session.wait(lambda s: s.iteration == 7)
        after_first = clone_state(session.stage.state_dict())
        assert not torch.equal(after_first["params"]["means"], saved["params"]["means"])
        assert session.rollback().result(10) == 3
        assert_states_equal(session.stage.state_dict(), saved)
        # Training on from the snapshot retraces the same path, bit for bit.
        session.step(4).result(10)
        session.wait(lambda s: s.iteration == 7)
        assert_states_equal(session.stage.state_dict(), after_first)
    finally:
        session.stop()


def test_cpu_training_uses_deterministic_kernels_then_restores_the_setting(run):
    """Multi-threaded CPU indexing backward adds in a racy order unless deterministic kernels are on (replays need the bits)."""
    seen = []

    class Watched(ToyStage):
        def step(self):
            seen.append(torch.are_deterministic_algorithms_enabled())
            return super().step()

    assert not torch.are_deterministic_algorithms_enabled()
    session = make_session(run, Watched(), paused=True)
    try:
        session.step(2).result(10)
        session.wait(lambda s: s.iteration == 2)
    finally:
        session.stop()
    assert seen == [True, True] and session.deterministic
    assert not torch.are_deterministic_algorithms_enabled()  # the process's setting is back


def test_rollback_without_snapshot_is_refused(run):
    session = make_session(run, paused=True)
    try:
        with pytest.raises(CommandRefused, match="no snapshot"):
            session.rollback().result(10)
    finally:
        session.stop()


def test_autosave_and_reopen_resume_from_same_iteration(run):
    session = make_session(run, paused=True, autosave_every_iters=5)
    saved = threading.Event()
    session.subscribe(lambda e: saved.set() if e.kind == "autosaved" and e.data["reason"] == "periodic" else None)
    try:
        session.set("lambda_reg", 0.5).result(10)
        session.step(6).result(10)
        session.wait(lambda s: s.iteration == 6)
        assert saved.wait(10)
        assert run.load_checkpoint()["session"]["iteration"] == 5  # the periodic save, before the stop
    finally:
        session.stop()  # saves again on stop
    continued = ToyStage()
    continued.load_state_dict(clone_state(session.stage.state_dict()))
    continued.cfg.lambda_reg = 0.5
    for _ in range(3):
        continued.step()

    reopened = Session.reopen(ToyStage(), run, SessionConfig(log_every=1, eval_every=0)).start()
    try:
        assert reopened.stats().state == "paused" and reopened.stats().iteration == 6
        assert reopened.stage.cfg.lambda_reg == 0.5  # live edits survive the reopen
        assert len(reopened.history()) == 6  # the loss curve too
        reopened.step(3).result(10)
        reopened.wait(lambda s: s.iteration == 9)
    finally:
        reopened.stop()
    assert_states_equal(reopened.stage.state_dict(), continued.state_dict())


@pytest.mark.parametrize("recorded_sizes", [True, False], ids=["log-sizes", "older-checkpoint"])
def test_reopen_after_a_crash_drops_the_records_of_lost_iterations(run, tmp_path, recorded_sizes):
    """kill -9 after the checkpoint at 5 and the metrics of 6..8: reopening at 5 must not keep 6..8 (they are trained again)."""
    import json
    import shutil

    session = make_session(run, paused=True, autosave_every_iters=5)
    try:
        session.step(8).result(10)
        session.wait(lambda s: s.iteration == 8 and s.steps_left == 0)
        session.set("lambda_reg", 0.5).result(10)  # an edit of the lost iterations
        crashed = RunFolder(shutil.copytree(run.path, tmp_path / "crashed"))  # the folder as kill -9 leaves it
    finally:
        session.stop()
    assert crashed.load_checkpoint()["session"]["iteration"] == 5
    with open(crashed.metrics_path, "a") as f:
        f.write('{"iteration": 9, "lo')  # killed mid-append
    if not recorded_sizes:  # a checkpoint written before it recorded its logs' lengths
        meta = json.loads((crashed.checkpoint_dir / "latest.json").read_text())
        meta["session"].pop("logs", None)
        (crashed.checkpoint_dir / "latest.json").write_text(json.dumps(meta))

    reopened = Session.reopen(ToyStage(), crashed, SessionConfig(log_every=1, eval_every=0)).start()
    try:
        assert reopened.stats().iteration == 5 and reopened.stage.cfg.lambda_reg == ToyStage().cfg.lambda_reg
        assert [r["iteration"] for r in reopened.history()] == [1, 2, 3, 4, 5]
        assert [r["iteration"] for r in crashed.metrics()] == [1, 2, 3, 4, 5] and not crashed.health().skipped_lines
        assert "set" not in [e["command"] for e in crashed.edits()]
        reopened.step(3).result(10)
        reopened.wait(lambda s: s.iteration == 8 and s.steps_left == 0)
    finally:
        reopened.stop()
    assert [r["iteration"] for r in crashed.metrics()] == list(range(1, 9))  # each iteration once
    assert [r["iteration"] for r in reopened.history()] == list(range(1, 9))


def test_a_stage_run_to_its_iteration_count_is_marked_done(run):
    """--steps equal to the iterations left (headless, paused with steps queued) reaches the end: the stage is done."""
    import io

    from rich.console import Console

    from text4d.app.live import drive
    from viewer.config import ViewerConfig

    stage = ToyStage()
    stage.cfg.iters = 6
    session = Session(stage, run, SessionConfig(log_every=1, eval_every=0), start_paused=True)
    drive(session, ViewerConfig(), "none", 4, Console(file=io.StringIO()), exports=())
    assert run.manifest()["stages_done"] == []  # 4 of 6: not done
    reopened = Session.reopen(ToyStage(), run, SessionConfig(log_every=1, eval_every=0))
    drive(reopened, ViewerConfig(), "none", 2, Console(file=io.StringIO()), exports=())
    assert reopened.stats().iteration == 6 and run.manifest()["stages_done"] == ["toy"]


class ExclusiveStage(ToyStage):
    """Counts step/render overlaps: the session lock must make them mutually exclusive."""

    def __init__(self):
        super().__init__()
        self.active = 0
        self.overlaps = 0
        self.guard = threading.Lock()

    def _enter(self):
        with self.guard:
            self.active += 1
            self.overlaps += self.active > 1

    def _leave(self):
        with self.guard:
            self.active -= 1

    def step(self):
        self._enter()
        try:
            return super().step()
        finally:
            self._leave()

    def render(self, cameras, t):
        self._enter()
        try:
            return super().render(cameras, t)
        finally:
            self._leave()


def test_concurrent_renders_during_training_are_safe(run) -> None:
    stage = ExclusiveStage()
    session = make_session(run, stage)
    errors: list[BaseException] = []
    frames: dict[int, list[torch.Tensor]] = {0: [], 1: []}

    def viewer(k: int) -> None:
        cam = Cameras.orbit(10.0 * k, 30.0 * k, 2.5, 45.0, 20, 16).reshape(1)
        try:
            for i in range(15):
                frames[k].append(session.render(cam, i / 14).rgb)
        except BaseException as e:  # noqa: BLE001 - surfaced by the assert below
            errors.append(e)

    try:
        start = session.stats().iteration
        threads = [threading.Thread(target=viewer, args=(k,)) for k in (0, 1)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        session.wait(lambda s: s.iteration >= start + 3)
    finally:
        session.stop()
    assert not errors
    assert stage.overlaps == 0
    for k in (0, 1):
        assert len(frames[k]) == 15
        assert all(f.shape == (1, 16, 20, 3) and bool(torch.isfinite(f).all()) for f in frames[k])


def test_nan_loss_pauses_and_rolls_back(run) -> None:
    stage = ToyStage()
    session = make_session(run, stage, paused=True, good_snapshot_every=4)
    events: list[SessionEvent] = []
    session.subscribe(events.append)
    try:
        session.step(8).result(10)
        session.wait(lambda s: s.iteration == 8)
        good = clone_state(stage.state_dict())
        stage.nan_at = 11
        session.resume().result(10)
        session.wait(lambda s: s.state == "paused")
    finally:
        session.stop()
    assert stage.iteration == 8
    assert_states_equal(stage.state_dict(), good)
    nan = [e for e in events if e.kind == "nan"]
    assert len(nan) == 1 and "rolled back to iteration 8" in nan[0].message and nan[0].level == "error"
    assert any(e["command"] == "nan_rollback" and e["args"] == {"to": 8} for e in run.edits())


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("lambda_rgb", -1.0, ">= 0.0"),
        ("lambda_alpha", "nan", "finite"),
        ("ref_size", 0, ">= 8"),
        ("lr", "fast", "expects float"),
        ("no_such_knob", 1.0, "unknown config key"),
    ],
)
def test_bad_values_are_refused_and_session_survives(run, key, value, match) -> None:
    session = make_session(run, paused=True)
    events: list[SessionEvent] = []
    session.subscribe(events.append)
    try:
        before = dict(vars(session.stage.cfg))
        with pytest.raises((CommandRefused, ConfigError), match=match):
            session.set(key, value).result(10)
        assert vars(session.stage.cfg) == before
        assert [e.level for e in events if e.kind == "refused"] == ["error"]
        session.step(1).result(10)
        session.wait(lambda s: s.iteration == 1)
    finally:
        session.stop()
    assert [e["ok"] for e in run.edits() if e["command"] == "set"] == [False]


def test_crop_and_prune_delete_the_right_gaussians(run):
    stage = ToyStage()
    session = make_session(run, stage, paused=True)
    try:
        centers = stage.gaussian_centers(0.5)
        lo, hi = [-0.2, -0.6, -0.6], [0.6, 0.6, 0.6]
        inside = ((centers >= torch.tensor(lo)) & (centers <= torch.tensor(hi))).all(-1)
        expected = stage.gaussian_centers(0.5)[~inside]
        assert session.crop(lo, hi, t=0.5).result(10) == int(inside.sum()) > 0
        assert torch.equal(stage.gaussian_centers(0.5), expected)

        opac = stage.gaussian_opacities()
        assert session.prune_opacity(0.5).result(10) == int((opac < 0.5).sum())
        assert bool((stage.gaussian_opacities() >= 0.5).all())

        n = stage.num_gaussians
        with pytest.raises(CommandRefused, match="all"):
            session.prune_opacity(1.0).result(10)
        with pytest.raises(CommandRefused, match="<= box max"):
            session.crop([1, 0, 0], [0, 1, 1]).result(10)
        with pytest.raises(CommandRefused, match="finite"):
            session.crop([float("nan"), 0, 0], [1, 1, 1]).result(10)
        assert stage.num_gaussians == n
        session.step(2).result(10)  # training goes on with fewer Gaussians
        session.wait(lambda s: s.iteration == 2)
    finally:
        session.stop()


def test_export_runs_beside_training(run):
    release = threading.Event()

    def slow_ply(stage, out, it, progress):
        progress(1, 4)  # a writer reports frames written; the studios show it
        release.wait(30)
        from text4d.export.ply import export_ply_sequence

        return export_ply_sequence(stage, out / f"ply-it{it:06d}", progress=progress)

    session = Session(ToyStage(), run, SessionConfig(log_every=1, eval_every=0), exporters={"ply-seq": slow_ply}).start()
    try:
        session.wait(lambda s: s.iteration >= 2)
        future = session.export("ply-seq")
        started = session.wait(lambda s: s.exports_running == 1 and s.export_progress == {"ply-seq": (1, 4)}).iteration
        session.wait(lambda s: s.iteration >= started + 3)  # training continues while the export waits
        release.set()
        path = future.result(30)
        assert session.wait(lambda s: s.exports_running == 0).export_progress == {}
        with pytest.raises(CommandRefused, match="unknown export"):
            session.export("obj").result(10)
    finally:
        session.stop()
    assert sorted(p.name for p in path.iterdir()) == ["frame_000.ply", "frame_001.ply", "frame_002.ply"]


def test_standard_exports_write_ply_sequence_and_video(run):
    from text4d.export import ExportSettings, exporters

    session = Session(ToyStage(), run, SessionConfig(log_every=1, eval_every=0), start_paused=True,
                      exporters=exporters(ExportSettings(video_frames=4, video_resolution=32), has_ground_truth=True)).start()
    try:
        session.step(2).result(10)
        paths = [session.export(kind).result(120) for kind in ("ply-seq", "mp4")]
    finally:
        session.stop()
    assert len(list(paths[0].glob("*.ply"))) == 3
    assert paths[1].suffix == ".mp4" and paths[1].stat().st_size > 0


def test_headless_drive_runs_steps_then_exports(run):
    import io

    from rich.console import Console

    from text4d.app.live import drive
    from text4d.export import ExportSettings, exporters
    from viewer.config import ViewerConfig

    out = io.StringIO()
    session = Session(ToyStage(), run, SessionConfig(log_every=1, eval_every=0), start_paused=True,
                      exporters=exporters(ExportSettings(video_frames=4, video_resolution=32), has_ground_truth=True))
    drive(session, ViewerConfig(), "none", 7, Console(file=out, width=200), exports=("ply-seq", "mp4"))
    assert session.stats().iteration == 7 and session.stats().state == "paused"
    assert run.load_checkpoint()["session"]["iteration"] == 7  # saved on stop
    assert len(list(run.exports_dir.glob("ply-it000007/*.ply"))) == 3
    assert (run.exports_dir / "orbit-it000007.mp4").stat().st_size > 0
    assert "wrote" in out.getvalue()


def test_headless_drive_reports_a_divergence(run):
    import io

    from rich.console import Console

    from text4d.app.live import drive
    from viewer.config import ViewerConfig

    stage = ToyStage()
    stage.nan_at = 4
    session = Session(stage, run, SessionConfig(log_every=1, eval_every=0, good_snapshot_every=2), start_paused=True)
    with pytest.raises(Text4DError, match="stopped at iteration 2 of 10"):
        drive(session, ViewerConfig(), "none", 10, Console(file=io.StringIO()))


def test_reopening_a_checkpoint_of_another_layout_says_so(run):
    session = make_session(run, paused=True)
    session.stop()  # writes the checkpoint

    class Changed(ToyStage):
        def load_state_dict(self, state):
            raise RuntimeError("Error(s) in loading state_dict for HexPlaneField:\n\tMissing key(s) in state_dict: \"heads_out.weight\"")

    with pytest.raises(Text4DError, match=r"does not fit this text4d's toy stage \(Error\(s\) in loading state_dict for HexPlaneField:\)"):
        Session.reopen(Changed(), run)


def test_real_stage_snapshot_rollback_and_reopen_are_exact(run):
    from tests.support.sample import tiny_sample_stage

    stage, _ = tiny_sample_stage()
    session = make_session(run, stage, paused=True)
    try:
        session.step(2).result(30)
        session.wait(lambda s: s.iteration == 2, timeout=120)
        session.snapshot().result(30)
        saved = clone_state(stage.state_dict())
        session.set("lambda_alpha", 10.0).result(30)
        assert session.crop([-0.15, -0.15, -0.15], [0.15, 0.15, 0.15], t=0.5).result(30) > 0
        session.step(2).result(30)
        session.wait(lambda s: s.iteration == 4, timeout=120)
        session.rollback().result(30)
        assert_states_equal(stage.state_dict(), saved)  # including the Gaussians the crop removed
        session.step(1).result(30)
        session.wait(lambda s: s.iteration == 3, timeout=120)
    finally:
        session.stop()
    expected = clone_state(stage.state_dict())
    reopened_stage, _ = tiny_sample_stage()
    reopened = Session.reopen(reopened_stage, run)
    assert reopened.stats().iteration == 3 and reopened_stage.cfg.lambda_alpha == 10.0
    assert_states_equal(reopened_stage.state_dict(), expected)


class GatedStage(ToyStage):
    """A ToyStage whose every step waits for a permit, so a test sees queued steps before they run."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.permits = threading.Semaphore(0)

    def step(self):
        assert self.permits.acquire(timeout=30), "no permit to step"
        return super().step()


def test_queued_steps_show_as_stepping_not_paused(run):
    stage = GatedStage()
    session = make_session(run, stage, paused=True)
    try:
        session.step(3).result(10)
        stats = session.stats()
        assert (stats.state, stats.steps_left, stats.training, stats.activity) == ("paused", 3, True, "stepping (3 left)")
        for _ in range(3):
            stage.permits.release()
        stats = session.wait(lambda s: s.iteration == 3 and s.steps_left == 0)
        assert (stats.training, stats.activity) == (False, "paused")
    finally:
        stage.permits.release()
        session.stop()


def test_the_rate_is_measured_from_the_first_step_and_kept_when_the_run_ends(run):
    import io

    from rich.console import Console

    from tests.support.toy_stage import ToyConfig
    from text4d.app.live import drive
    from viewer.config import ViewerConfig

    session = make_session(run, paused=True)
    try:
        session.step(1).result(10)
        assert session.wait(lambda s: s.iteration == 1 and s.steps_left == 0).it_per_s > 0  # one step is a measurement
    finally:
        session.stop()
    out = io.StringIO()
    session = Session(ToyStage(ToyConfig(iters=6)), RunFolder.create("finished", run.path.parent), SessionConfig(log_every=1, eval_every=0))
    drive(session, ViewerConfig(), "none", None, Console(file=out, width=200), exports=())
    stats = session.stats()
    assert stats.state == "finished" and stats.it_per_s > 0  # the run's average, not 0 because the loop ended
    assert "— it/s" not in out.getvalue() and "0.0 it/s" not in out.getvalue(), out.getvalue()


def test_headless_view_of_a_finished_run_keeps_its_exports(run):
    """`text4d view RUN --ui none` on a finished run: says there is nothing to train, does not rewrite what it exported."""
    import io

    from rich.console import Console

    from text4d.app.live import drive
    from text4d.export import ExportSettings, exporters
    from viewer.config import ViewerConfig

    def session(stage, *opened):
        cfg = SessionConfig(log_every=1, eval_every=0)
        exporters_ = exporters(ExportSettings(video_frames=4, video_resolution=32), has_ground_truth=True)
        return Session.reopen(stage, run, cfg, exporters=exporters_) if opened else Session(stage, run, cfg, start_paused=True, exporters=exporters_)

    stage = ToyStage()
    stage.cfg.iters = 4
    drive(session(stage), ViewerConfig(), "none", 4, Console(file=io.StringIO()), exports=("ply-seq",))
    ply = run.exports_dir / "ply-it000004"
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in [ply, *ply.iterdir()]}

    out = io.StringIO()
    viewed = session(ToyStage(), "reopened")
    drive(viewed, ViewerConfig(), "none", None, Console(file=out, width=300), exports=("ply-seq", "mp4"))
    text = out.getvalue()
    assert "nothing to train" in text and "is finished at iteration 4 of 4" in text
    assert f"kept {ply}" in text and {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in [ply, *ply.iterdir()]} == before
    assert f"wrote {run.exports_dir / 'orbit-it000004.mp4'}" in text  # a missing export is still written

    trained = session(ToyStage(), "reopened")
    drive(trained, ViewerConfig(), "none", 1, Console(file=io.StringIO()), exports=("ply-seq",))
    assert (run.exports_dir / "ply-it000005").is_dir()  # a new state exports anew

    edited = session(ToyStage(), "reopened").start()
    try:
        assert edited.exported("ply-seq") == run.exports_dir / "ply-it000005"
        edited.set("radius", 0.2).result(10)  # a setting the renders depend on: not the same exports any more
        assert edited.exported("ply-seq") is None
    finally:
        edited.stop()
