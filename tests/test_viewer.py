"""Viewer pieces without a browser: the render worker's scheduling, frame modes, the busy-port fallback."""

from __future__ import annotations

import socket
import threading

import numpy as np
import pytest
import torch

from tests.support.sample import TINY_SAMPLE
from tests.support.toy_stage import ToyStage
from text4d.recording import RunFolder
from text4d.render.camera import orbit_c2w
from text4d.session import Session, SessionConfig
from text4d.views import resize_images
from viewer.controls import count_axis
from viewer.frames import FrameRenderer, pair_cells, to_uint8
from viewer.render_worker import RenderWorker, ViewRequest, WorkerConfig, image_size


def request(reason, t=0.0, mode="rgb", resolution=64):
    return ViewRequest(orbit_c2w(10.0, 20.0, 2.5).numpy(), 0.8, 1.5, t, mode, resolution, reason)


class Recorder:
    """A render function that blocks on its first call until released, recording every request."""

    def __init__(self, fail_on: float | None = None):
        self.calls: list[tuple[str, float, int, int]] = []
        self.sent: list[int] = []
        self.first_started = threading.Event()
        self.release = threading.Event()
        self.fail_on = fail_on
        self.done = threading.Condition()

    def render(self, req, width, height):
        self.first_started.set()
        self.release.wait(10)
        if req.t == self.fail_on:
            raise RuntimeError("boom")
        with self.done:
            self.calls.append((req.reason, req.t, width, height))
            self.done.notify_all()
        return np.zeros((height, width, 3), np.uint8)

    def send(self, image, quality):
        self.sent.append(quality)

    def wait_calls(self, n):
        with self.done:
            assert self.done.wait_for(lambda: len(self.calls) >= n, 10), self.calls


def test_newest_request_wins_and_updates_never_displace_moves():
    rec = Recorder()
    worker = RenderWorker(rec.render, rec.send, WorkerConfig(max_fps=1000, still_delay=0.05))
    try:
        worker.submit(request("update", t=0.0))
        assert rec.first_started.wait(10)
        for t in (0.1, 0.2, 0.3, 0.4):  # arrive while the first frame renders
            worker.submit(request("move", t=t))
        worker.submit(request("update", t=0.9))  # training progress: must not replace the pending move
        rec.release.set()
        rec.wait_calls(3)
    finally:
        worker.stop()
    assert [(r, t) for r, t, *_ in rec.calls[:3]] == [("update", 0.0), ("move", 0.4), ("still", 0.4)]
    # A moving frame is cheaper (lower JPEG quality, never bigger); the settled one is full size and quality.
    (_, _, w_move, _), (_, _, w_still, h_still) = rec.calls[1], rec.calls[2]
    assert (w_still, h_still) == image_size(64, 1.5) and w_move <= w_still
    assert rec.sent[1:3] == [WorkerConfig().move_quality, WorkerConfig().still_quality]


def test_a_failing_render_is_reported_and_survived() -> None:
    rec = Recorder(fail_on=0.5)
    rec.release.set()
    errors: list[str] = []
    reported = threading.Event()

    def on_error(message: str) -> None:
        errors.append(message)
        reported.set()

    worker = RenderWorker(rec.render, rec.send, WorkerConfig(max_fps=1000), on_error=on_error)
    try:
        worker.submit(request("update", t=0.5))
        assert reported.wait(10)
        worker.submit(request("update", t=0.25))
        rec.wait_calls(1)
    finally:
        worker.stop()
    assert errors == ["render failed: boom"] and worker.stats.errors == 1
    assert rec.calls[0][:2] == ("update", 0.25)


@pytest.fixture
def toy_session(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    session = Session(ToyStage(), RunFolder.create("viewer", tmp_path), SessionConfig(eval_every=0), start_paused=True).start()
    yield session
    session.stop()
    torch.set_num_threads(threads)


def test_frame_modes(toy_session):
    frames = FrameRenderer(toy_session)
    assert frames.has_ground_truth
    images = {mode: frames(request("still", t=0.5, mode=mode), 48, 32) for mode in ("rgb", "alpha", "depth", "gt")}
    for mode, image in images.items():
        assert image.shape == (32, 48, 3) and image.dtype == np.uint8, mode
        assert image.std() > 0, f"{mode} frame is flat"
    alpha = images["alpha"]
    assert (alpha[..., 0] == alpha[..., 1]).all()  # gray
    gt_view = frames.ground_truth[frames.nearest_ground_truth(0.5, request("still").c2w)]
    assert float(gt_view.times[0]) == 0.5


@pytest.mark.parametrize(("width", "height", "first", "second"), [(200, 96, (0, 0, 99, 96), (101, 0, 99, 96)), (96, 200, (0, 0, 96, 99), (0, 101, 96, 99))])
def test_ground_truth_comes_first_and_both_are_labelled(toy_session, width, height, first, second):
    """"Ground truth | model": ground truth left of the model (above it in a tall view), each with its label."""
    frames = FrameRenderer(toy_session)
    req = request("still", t=0.5, mode="gt")
    assert pair_cells(1.0, width, height) == (first, second)  # the held-out views are square
    image = frames(req, width, height)
    size = min(first[2:])
    pictures = [image[y + (h - size) // 2 :, x + (w - size) // 2 :][:size, :size] for x, y, w, h in (first, second)]
    truth = frames.ground_truth[frames.nearest_ground_truth(0.5, req.c2w)].composite(torch.ones(3))[0]
    want = to_uint8(resize_images(truth, size, size)).astype(int)
    top = slice(0, size // 2)  # labels sit at the bottom-left, clear of this
    assert np.abs(pictures[0][top].astype(int) - want[top]).max() <= 1  # ground truth first
    assert np.abs(pictures[1][top].astype(int) - want[top]).max() > 8  # then the model
    for picture in pictures:
        tag = picture[-20:, :40]
        assert (np.abs(tag.astype(int) - (24, 26, 30)).max(axis=-1) <= 2).mean() > 0.3  # the dark label box
        assert (tag.min(axis=-1) > 200).any()  # with white text on it


def test_a_thumbnail_gets_no_labels(toy_session):
    image = FrameRenderer(toy_session)(request("still", t=0.5, mode="gt"), 48, 32)
    assert not (np.abs(image.astype(int) - (24, 26, 30)).max(axis=-1) <= 2).any()


@pytest.mark.parametrize(("peak", "divisor", "title"), [(576, 1.0, "Gaussians"), (10_000, 1e3, "Gaussians (thousands)"), (1_200_000, 1e6, "Gaussians (millions)")])
def test_count_axes_keep_labels_short(peak, divisor, title):
    assert count_axis("Gaussians", peak) == (divisor, title)
    assert len(f"{peak / divisor:,.0f}") <= 3  # uPlot's 50 px y axis shows 3 digits whole


def test_busy_port_moves_to_the_next_free_one(toy_session, caplog):
    pytest.importorskip("viser", reason="viewer extra not installed")
    from viewer.viser_app import ViewerApp, ViewerConfig

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        app = ViewerApp(toy_session, ViewerConfig(port=port)).start()
        try:
            assert app.port != port and app.url.endswith(f":{app.port}")
            assert f"port {port} is busy" in caplog.text
        finally:
            app.stop()


def test_web_status_says_stepping_and_slow_rates_in_seconds(toy_session, monkeypatch):
    pytest.importorskip("viser", reason="viewer extra not installed")
    import dataclasses

    from viewer.viser_app import ViewerApp, ViewerConfig

    stepping = dataclasses.replace(toy_session.stats(), state="paused", steps_left=5, it_per_s=0.12)
    monkeypatch.setattr(toy_session, "stats", lambda: stepping)
    app = ViewerApp(toy_session, ViewerConfig(port=0)).start()
    try:
        app._update_stats()
        assert "stepping (5 left)" in app.stats_md.content and "8.3 s/it" in app.stats_md.content
        assert not app.pause_btn.disabled  # Pause cancels the queued steps
    finally:
        app.stop()


def test_bench_viewer_measures_every_phase_against_training(tmp_path, monkeypatch):
    """`text4d bench viewer` at its smallest: training runs under every phase and each reports what it measured."""
    from text4d.app.bench.viewer import run

    monkeypatch.setenv("TEXT4D_CACHE", str(tmp_path / "cache"))
    result = run(overrides=[*TINY_SAMPLE, "static_iters=1"], resolution=32, seconds=0.6, warmup_iters=2)
    assert result["train_it_per_s"] > 0 and result["gaussians"] > 0 and result["resolution"] == 32
    for phase in ("watching", "orbiting", "orbiting_fixed"):
        assert result[phase]["baseline_it_per_s"] > 0, phase
    assert result["orbiting_fixed"]["frames_per_s"] > 0
    assert result["scrub_latency_ms"]["samples"] > 0 and result["scrub_latency_ms"]["median"] > 0
