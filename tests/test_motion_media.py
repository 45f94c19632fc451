"""Foreground matting + recentring, and image -> video with a tiny random Stable Video Diffusion."""

from __future__ import annotations

import numpy as np
import pytest

from text4d.errors import InputError, ModelFileError
from text4d.io.media import read_video, write_video
from text4d.video.matting import estimate_alpha, foreground, recenter


def _box_frames(n: int = 3, h: int = 40, w: int = 60) -> tuple[np.ndarray, np.ndarray]:
    frames = np.ones((n, h, w, 3), np.float32)  # white background
    truth = np.zeros((n, h, w), bool)
    for i in range(n):
        frames[i, 10:26, 8 + 6 * i : 24 + 6 * i] = (0.8, 0.1, 0.1)
        truth[i, 10:26, 8 + 6 * i : 24 + 6 * i] = True
    return frames, truth


def test_background_keying_finds_the_object():
    frames, truth = _box_frames()
    alpha = estimate_alpha(frames)
    assert alpha[truth].mean() > 0.95 and alpha[~truth].mean() < 0.02


def test_recentre_uses_one_box_for_the_clip_and_keeps_the_motion():
    frames, truth = _box_frames()
    rgb, alpha = recenter(frames, truth.astype(np.float32), size=64, border_ratio=0.2)
    assert rgb.shape == (3, 64, 64, 3) and alpha.shape == (3, 64, 64)
    union = (alpha > 0.5).any(axis=0)
    ys, xs = np.nonzero(union)
    assert max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) == pytest.approx(int(64 * 0.8), abs=2)
    assert abs((xs.min() + xs.max()) / 2 - 31.5) <= 1.5
    centres = [np.nonzero(alpha[i] > 0.5)[1].mean() for i in range(3)]
    assert centres[0] < centres[1] < centres[2], "per-clip box: the object still moves right"


def test_onnx_segmentation_model(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    # A 1x1 "segmentation network": red-channel logit, enough to exercise loading, pre/post-processing.
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 3, 1, 1], [4.0, 0.0, 0.0])
    node = helper.make_node("Conv", ["x", "w"], ["y"])
    graph = helper.make_graph([node], "seg", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 32, 32])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "seg.onnx"
    onnx.save(model, str(path))
    frames = np.zeros((2, 40, 40, 3), np.float32)
    frames[:, 10:30, 10:30, 0] = 1.0
    alpha = estimate_alpha(frames, path)
    assert alpha.shape == (2, 40, 40)
    assert alpha[:, 14:26, 14:26].min() > 0.9 and alpha[:, :6, :6].max() < 0.1
    with pytest.raises(ModelFileError, match="--matting-model"):
        foreground(frames, tmp_path / "missing.onnx")


def test_video_round_trip_and_unreadable_video(tmp_path):
    frames = (np.random.default_rng(0).random((4, 32, 48, 3)) * 255).astype(np.uint8)
    write_video(tmp_path / "a.mp4", frames, 8)
    back, fps = read_video(tmp_path / "a.mp4")
    assert back.shape == frames.shape and fps == pytest.approx(8)
    (tmp_path / "b.mp4").write_text("nope")
    with pytest.raises(InputError, match="cannot read video"):
        read_video(tmp_path / "b.mp4")


def test_svd_image_to_video_from_a_local_folder(svd_dir, tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from text4d.app.video import video_app

    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[10:30, 12:28] = (30, 160, 40, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "in.png")
    args = ["from-image", str(tmp_path / "in.png"), "--svd", str(svd_dir), "--frames", "2", "--steps", "2",
            "--width", "32", "--height", "32", "--size", "24", "--device", "cpu", "--seed", "1"]
    res = CliRunner().invoke(video_app, [*args, "--output", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert (tmp_path / "a" / "video.mp4").is_file() and len(list((tmp_path / "a" / "frames").glob("*.png"))) == 2
    res = CliRunner().invoke(video_app, [*args[:3], str(tmp_path / "nowhere"), *args[4:]])
    assert isinstance(res.exception, ModelFileError) and "--svd" in str(res.exception)


def test_svd_is_seeded(svd_dir):
    from text4d.video.svd import image_to_video, load_svd

    pipe = load_svd(svd_dir)
    img = np.full((32, 32, 3), 128, np.uint8)
    kw = dict(num_frames=2, num_inference_steps=2, width=32, height=32)
    a = image_to_video(pipe, img, seed=3, **kw)
    b = image_to_video(pipe, img, seed=3, **kw)
    c = image_to_video(pipe, img, seed=4, **kw)
    assert a.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
