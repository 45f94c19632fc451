"""Motion edits through the Session on the tiny control-point sample: drags, keyframe blending, the constraint, retimes, undo, replay, reopen, exports."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch

import text4d.app.sample
from tests.support.cli import invoke
from tests.support.sample import TINY_CONTROL_POINTS, TINY_SAMPLE, memoised_by_config, small_exporters
from text4d.app.kinds import open_run
from text4d.app.replay import compare_states, replay
from text4d.app.runkind import load
from text4d.config import to_yaml
from text4d.gaussians.fields import EditableField
from text4d.io.ply import load_ply
from text4d.recording import RunFolder
from text4d.session import CommandRefused, MotionInfo, Session, clone_state, pose_drag
from text4d.stages.dynamic import DynamicStage

# Past the 2 static steps at 4: the control points are placed and have learned a little motion.
OVERRIDES = [*TINY_CONTROL_POINTS, "static_iters=2", "iters=40", "ramp_reference=false", "densify.start=1000",
             "session.log_every=1", "session.eval_every=0", "session.good_snapshot_every=1000"]
T_EDIT = 0.5
MOVE = (0.12, 0.05, -0.04)


@pytest.fixture(scope="module")
def shared_sample(tmp_path_factory):
    """One CPU thread, a private cache, and the sample's creature built once for every stage of this module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    patch = pytest.MonkeyPatch()
    patch.setenv("TEXT4D_CACHE", str(tmp_path_factory.mktemp("cache")))
    patch.setattr(text4d.app.sample, "load_sample", memoised_by_config(text4d.app.sample.load_sample))
    yield
    patch.undo()
    torch.set_num_threads(threads)


def new_run(root, name: str = "motion", extra: list[str] | None = None) -> tuple[RunFolder, Session]:
    """A sample run folder (openable by `text4d view`) and a paused, started session on it, trained to iteration 4."""
    cfg = load(text4d.app.sample.KIND, None, TINY_SAMPLE + OVERRIDES + list(extra or []) + [f"out={root}"])
    run = RunFolder.create(name, root)
    run.write_config(to_yaml(cfg))
    run.update_manifest(kind="sample")
    stage = text4d.app.sample.build_sample_stage(cfg, torch.device("cpu"))
    session = Session(stage, run, cfg.session, start_paused=True, exporters=small_exporters(stage)).start()
    steps(session, 4)
    return run, session


def steps(session: Session, n: int) -> None:
    target = session.stats().iteration + n
    session.step(n).result(30)
    session.wait(lambda s: s.steps_left == 0 and s.iteration == target, 120)


def motion(session: Session) -> MotionInfo:
    info = session.motion()
    assert info is not None, "the dynamic stage edits motion"
    return info


def field_of(session: Session) -> EditableField:
    stage = session.stage
    assert isinstance(stage, DynamicStage) and isinstance(stage.field, EditableField)
    return stage.field


def handle_and_far(session: Session) -> tuple[int, list[int]]:
    """A node to drag (the one nearest the centre) and the nodes farther than twice the drag radius from it."""
    points = session.control_points(T_EDIT)
    handle = int(np.linalg.norm(points - points.mean(0), axis=1).argmin())
    far = np.linalg.norm(points - points[handle], axis=1) > 0.5
    return handle, np.flatnonzero(far).tolist()


@pytest.fixture
def session(shared_sample, tmp_path):
    _, session = new_run(tmp_path)
    yield session
    session.stop()


def deformed_means(session: Session, t: float) -> torch.Tensor:
    stage = session.stage
    assert isinstance(stage, DynamicStage)
    with torch.no_grad():
        return stage.deformed(torch.tensor([t])).means[0].clone()


def test_a_drag_moves_the_dragged_gaussians_and_not_the_far_ones(session):
    handle, far = handle_and_far(session)
    field = field_of(session)
    before_nodes = session.control_points(T_EDIT)
    before, before_start = deformed_means(session, T_EDIT), deformed_means(session, 0.0)
    # A lone handle (radius 0): each Gaussian moves by its skinning weight on that node times the drag, the rest not at all.
    assert session.edit_pose(pose_drag([handle], T_EDIT, MOVE, radius=0.0, width=0.2)).result(30) == 0
    with torch.no_grad():
        weights, idx = field.weights(session.stage.model.means)
    on_handle = (weights * (idx == handle)).sum(-1)
    shift = deformed_means(session, T_EDIT) - before
    assert (on_handle > 0.25).any() and (on_handle == 0).any()
    assert torch.allclose(shift, on_handle[:, None] * torch.tensor(MOVE), atol=1e-5)
    assert shift[on_handle == 0].abs().max() == 0.0  # bit for bit
    assert torch.equal(deformed_means(session, 0.0), before_start)  # outside the keyframe's window nothing moves at all
    session.undo_edit().result(30)
    # With a radius, the nodes near the handle follow as rigidly as they can; the far ones stay pinned.
    session.edit_pose(pose_drag([handle], T_EDIT, MOVE, radius=0.4, width=0.2)).result(30)
    after_nodes = session.control_points(T_EDIT)
    moved = np.linalg.norm(after_nodes - before_nodes, axis=1)
    assert np.allclose(after_nodes[handle] - before_nodes[handle], MOVE, atol=1e-5)  # the handle goes exactly where it was dragged
    assert far and moved[far].max() == 0.0
    followers = (moved > 1e-4) & (np.arange(len(moved)) != handle)
    assert followers.any() and moved[followers].max() <= np.linalg.norm(MOVE) * 1.05
    info = motion(session)
    assert len(info.keyframes) == 1 and info.keyframes[0].nodes == 1 + followers.sum() and info.undo == 1


def test_a_keyframe_blends_into_neighbouring_times_without_jumps(session):
    handle, _ = handle_and_far(session)
    width = 0.25
    stage = session.stage
    field = field_of(session)
    times = torch.linspace(0.0, 1.0, 401)
    with torch.no_grad():
        base = field.node_motion(times, edited=False)[0][:, handle]
    session.edit_pose(pose_drag([handle], T_EDIT, MOVE, radius=0.3, width=width)).result(30)
    with torch.no_grad():
        edited = field.node_motion(times, edited=True)[0][:, handle]
    offset = (edited - base).norm(dim=-1)
    size = float(np.linalg.norm(MOVE))
    assert offset.max() <= size + 1e-5 and abs(float(offset[200]) - size) < 1e-5  # full edit at its time, never more
    outside = (times - T_EDIT).abs() >= width
    assert torch.equal(edited[outside], base[outside])  # beyond the window: exactly the learned motion
    # The edit eases in and out: its offset changes by at most its largest slope (pi/2 * size/width) per time step.
    steps_ = (offset[1:] - offset[:-1]).abs()
    assert steps_.max() <= math.pi / 2 * size / width * float(times[1] - times[0]) * 1.01
    # At the clip's frames the edited motion never jumps more than the learned motion plus the edit.
    frames = torch.tensor(stage.clip_times())
    with torch.no_grad():
        learned, now = field.node_motion(frames, edited=False)[0][:, handle], field.node_motion(frames)[0][:, handle]
    assert ((now[1:] - now[:-1]).norm(dim=-1) <= (learned[1:] - learned[:-1]).norm(dim=-1) + size + 1e-5).all()


def test_undo_restores_the_exact_parameters_and_redo_reapplies(session):
    handle, _ = handle_and_far(session)
    before = clone_state(session.stage.state_dict())
    session.edit_pose(pose_drag([handle], T_EDIT, MOVE, radius=0.3)).result(30)
    session.retime("trim", start=1, end=2).result(30)
    edited = clone_state(session.stage.state_dict())
    assert session.frame_count == 2
    session.undo_edit().result(30)
    session.undo_edit().result(30)
    assert compare_states(before, session.stage.state_dict())[0] and session.frame_count == 3
    with pytest.raises(CommandRefused, match="no motion edit to undo"):
        session.undo_edit().result(30)
    session.redo_edit().result(30)
    session.redo_edit().result(30)
    assert compare_states(edited, session.stage.state_dict())[0] and session.frame_count == 2
    info = motion(session)
    assert (info.undo, info.redo) == (2, 0) and info.retime == "trim 1-2"
    session.undo_edit().result(30)
    session.edit_remove(0).result(30)  # a new edit drops what could be redone
    assert motion(session).redo == 0 and motion(session).keyframes == ()


def test_a_drag_preview_changes_the_render_and_keeps_nothing(session):
    from text4d.render.camera import Cameras

    handle, _ = handle_and_far(session)
    before = clone_state(session.stage.state_dict())
    cams = Cameras.orbit(0.0, 0.0, 1.5, 49.1, 32, 32).reshape(1)
    plain = session.render(cams, T_EDIT).rgb
    drag = pose_drag([handle], T_EDIT, (0.3, 0.0, 0.0), radius=0.3)
    previewed = session.render(cams, T_EDIT, drag=drag).rgb
    assert (previewed - plain).abs().max() > 0.05
    assert compare_states(before, session.stage.state_dict())[0]
    session.edit_pose(drag).result(30)
    assert torch.equal(session.render(cams, T_EDIT).rgb, previewed)  # what the preview showed is what the edit made
    assert torch.equal(session.render(cams, T_EDIT, drag=drag).rgb, previewed)  # a made edit is not previewed twice


def test_bad_drags_and_retimes_are_refused_in_a_sentence(session):
    with pytest.raises(CommandRefused, match="control point 99 does not exist"):
        session.edit_pose(pose_drag([99], T_EDIT, MOVE)).result(30)
    with pytest.raises(CommandRefused, match="drag time must be in"):
        pose_drag([0], 1.5, MOVE)
    with pytest.raises(CommandRefused, match="unit quaternion"):
        pose_drag([0], 0.5, MOVE, rotation=(2.0, 0.0, 0.0, 0.0))
    with pytest.raises(CommandRefused, match="retime trim: end must be in 1..2"):
        session.retime("trim", start=1, end=7).result(30)
    with pytest.raises(CommandRefused, match="there is no keyframe 0"):
        session.edit_remove(0).result(30)
    assert motion(session).undo == 0  # nothing refused was kept as an edit


def drift(session: Session, handle: int, target: np.ndarray) -> float:
    return float(np.linalg.norm(session.control_points(T_EDIT)[handle] - target))


def test_resuming_with_the_constraint_keeps_the_edit_while_the_data_loss_falls(shared_sample, tmp_path):
    """Training on after an edit: lambda_edit holds the edited pose; with 0 the data pulls it away (the check can fail)."""
    results = {}
    for weight in (10000.0, 0.0):  # the default, and none
        _, session = new_run(tmp_path / str(weight))
        try:
            handle, _ = handle_and_far(session)
            session.set("lr_deform", 0.01).result(30)  # a fast learner, so the data would undo an edit within the test
            session.set("lambda_edit", weight).result(30)
            session.edit_pose(pose_drag([handle], T_EDIT, (0.25, 0.0, 0.0), radius=0.3, width=0.3)).result(30)
            target = session.control_points(T_EDIT)[handle]
            steps(session, 24)
            rgb = [r["rgb"] for r in session.history() if r["iteration"] > 4]
            results[weight] = (drift(session, handle, target), rgb)
        finally:
            session.stop()
    held, rgb = results[10000.0]
    free, _ = results[0.0]
    assert held < 0.01 and free > 5 * held, results  # within 4% of the 0.25 drag (node spacing ~0.3); free: about 40%
    assert np.mean(rgb[-4:]) < 0.8 * np.mean(rgb[:4]), rgb  # while the data term still falls


def test_freezing_the_motion_keeps_the_deformation_exactly(session):
    handle, _ = handle_and_far(session)
    session.edit_pose(pose_drag([handle], T_EDIT, MOVE, radius=0.3)).result(30)
    session.set("train_motion", False).result(30)
    field_before = clone_state(field_of(session).state_dict())
    means_before = session.stage.model.means.clone()
    steps(session, 3)
    assert compare_states(field_before, field_of(session).state_dict())[0]
    assert not torch.equal(means_before, session.stage.model.means)  # the Gaussians still train


def ply_frames(folder) -> list:
    return [load_ply(p) for p in sorted(folder.glob("frame_*.ply"))]


def test_retimes_and_pose_edits_change_what_exports_write(session):
    stage = session.stage
    assert isinstance(stage, DynamicStage)
    plain = ply_frames(session.export("ply-seq").result(60))
    assert len(plain) == 3
    handle, _ = handle_and_far(session)
    session.edit_pose(pose_drag([handle], T_EDIT, MOVE, radius=0.3)).result(30)
    edited = session.export("ply-seq").result(60)
    frames = ply_frames(edited)
    assert len(frames) == 3 and not np.array_equal(frames[1].means, plain[1].means) and np.array_equal(frames[0].means, plain[0].means)
    assert np.array_equal(frames[1].means, stage.deformed_raw(T_EDIT).means)
    cases = [
        (("trim", {"start": 1, "end": 2}), [0.5, 1.0]),
        (("loop", {"count": 2}), [0.5, 1.0, 0.5, 1.0]),
        (("hold", {"frame": 0, "count": 2}), [0.5, 0.5, 0.5, 1.0, 0.5, 1.0]),
        (("speed", {"factor": 2.5}), [0.5, 0.75, 1.0]),  # frame 2.5 of the held clip: halfway between t = 0.5 and 1
    ]
    for (op, params), times in cases:
        session.retime(op, **params).result(30)
        assert session.clip_times() == pytest.approx(times), op
        frames = ply_frames(session.export("ply-seq").result(60))
        assert len(frames) == len(times), op
        for got, t in zip(frames, times):
            assert np.array_equal(got.means, stage.deformed_raw(t).means), (op, t)
    spz = session.export("gltf-splat").result(60)
    assert len(list(spz.glob("frame_*.glb"))) == len(cases[-1][1])
    for _ in cases:
        session.undo_edit().result(30)
    assert session.clip_times() == pytest.approx([0.0, 0.5, 1.0])
    session.retime("curve", points=[[0, 1], [1, 0]], frames=5).result(30)  # a remap curve: the clip played backwards over 5 frames
    assert session.clip_times() == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    frames = ply_frames(session.export("ply-seq").result(60))
    assert np.array_equal(frames[2].means, stage.deformed_raw(T_EDIT).means) and np.array_equal(frames[1].means, stage.deformed_raw(0.75).means)


def record_edited_run(root) -> RunFolder:
    """A run made like `text4d demo` then `text4d view`: pose edits, retimes, undo/redo, a weight change, a reopen."""
    run, session = new_run(root, "edited")
    try:
        handle, far = handle_and_far(session)
        session.edit_pose(pose_drag([handle], T_EDIT, MOVE, radius=0.3, width=0.2)).result(30)
        steps(session, 2)
        session.edit_pose(pose_drag([far[0]], 0.25, (0.0, 0.0, 0.1), (math.cos(0.2), 0.0, math.sin(0.2), 0.0), tuple(session.control_points(0.25)[far[0]]))).result(30)
        session.retime("loop", count=2).result(30)
        session.undo_edit().result(30)
        session.redo_edit().result(30)
        session.set("lambda_edit", 300.0).result(30)
        steps(session, 2)
        session.undo_edit().result(30)  # the loop goes; can be redone after reopening
    finally:
        session.stop()
    reopened = open_run(run.path).session.start()
    try:
        assert motion(reopened).redo == 1
        reopened.redo_edit().result(30)
        reopened.edit_remove(0).result(30)
        steps(reopened, 2)
    finally:
        reopened.stop()
    return run


def test_edits_are_logged_replay_bit_exactly_and_survive_reopening(shared_sample, tmp_path):
    run = record_edited_run(tmp_path / "rec")
    edits = [e for e in run.edits() if e["ok"]]
    names = [e["command"] for e in edits]
    assert {"edit_pose", "retime", "undo_edit", "redo_edit", "edit_remove"} <= set(names) and names.count("open") == 2
    drag = next(e for e in edits if e["command"] == "edit_pose")
    assert drag["iteration"] == 4 and drag["args"]["t"] == T_EDIT and drag["args"]["translation"] == list(MOVE)
    result = replay(run.path, out=tmp_path / "replays")
    assert result.bit_exact and result.reproduced, result
    assert result.metrics_compared >= 8 and result.first_metric_divergence is None

    # Reopened (what `text4d view` does): keyframes, retime and undo history are all there.
    opened = open_run(run.path).session
    info = motion(opened)
    assert len(info.keyframes) == 1 and info.keyframes[0].t == 0.25 and info.retime == "loop x2" and info.frames == 6
    assert info.undo == 4 and info.redo == 0  # 2 drags, the loop, and the removal (undos and redos moved edits between the stacks)
    opened.start()
    try:
        opened.undo_edit().result(30)  # brings keyframe 0 back
        assert len(motion(opened).keyframes) == 2
    finally:
        opened.stop()


def test_a_tampered_drag_does_not_replay(shared_sample, tmp_path):
    """The replay check can fail: a drag moved by a hundredth in the log gives other parameters."""
    run, session = new_run(tmp_path / "rec", "tamper")
    try:
        handle, _ = handle_and_far(session)
        session.edit_pose(pose_drag([handle], T_EDIT, MOVE, radius=0.3)).result(30)
        steps(session, 2)
    finally:
        session.stop()
    tampered = RunFolder(shutil.copytree(run.path, tmp_path / "tampered"))
    text = tampered.edits_path.read_text()
    assert f'"translation": [{MOVE[0]}' in text
    tampered.edits_path.write_text(text.replace(f'"translation": [{MOVE[0]}', f'"translation": [{MOVE[0] + 0.01}', 1))
    result = replay(tampered.path, out=tmp_path / "replays")
    assert not result.bit_exact and not result.reproduced


def test_headless_view_and_export_of_an_edited_run(shared_sample, tmp_path):
    """`text4d view RUN --ui none` and `text4d export RUN` read the edits from the checkpoint."""
    run, session = new_run(tmp_path, "viewed", ["iters=2"])  # finished at iteration 4: viewing it trains nothing
    try:
        handle, _ = handle_and_far(session)
        session.edit_pose(pose_drag([handle], T_EDIT, MOVE, radius=0.3)).result(30)
        session.retime("hold", frame=1, count=1).result(30)
        expected = session.stage.deformed_raw(T_EDIT).means
    finally:
        session.stop()
    code, output = invoke("view", run.path, "--ui", "none")
    assert code == 0, output
    code, output = invoke("export", run.path, "--format", "spz-seq", "--out", tmp_path / "spz")
    assert code == 0, output
    assert len(list((tmp_path / "spz").glob("frame_*.spz"))) == 4
    code, output = invoke("export", run.path, "--format", "ply-seq", "--out", tmp_path / "ply", "--frames", "1:3")
    assert code == 0, output
    frames = ply_frames(tmp_path / "ply")
    assert len(frames) == 2 and all(np.array_equal(f.means, expected) for f in frames)  # frames 1 and 2: the held, edited pose


def test_bench_drag_times_drags_while_training_and_paused(shared_sample):
    """`text4d bench drag` at its smallest: every number is measured from real drag frames (the speed itself is the bench's to report)."""
    from text4d.app.bench.drag import run

    result = run(overrides=["static_iters=2"], gestures=2, events=3, warmup_iters=2)
    for phase in (result, result["paused"]):
        assert phase["drag_latency_ms"]["samples"] >= 2 and phase["drag_latency_ms"]["median"] > 0
        assert phase["points_ms"]["samples"] == 6 and phase["commit_ms"]["samples"] == 2
    assert result["drag_latency_ms"]["target"] == 50 and result["tiny"] and result["control_points"] == 128 and result["train_it_per_s"] > 0
