"""D-NeRF layout reader/writer: camera conventions, round trips, and every kind of bad input."""

from __future__ import annotations

import json
import logging
import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from text4d.errors import InputError
from text4d.gaussians.hull import project
from text4d.io.dnerf import read_dnerf, read_split, write_dnerf
from text4d.render.camera import Cameras
from text4d.samples import SampleConfig, load_sample

SMALL = SampleConfig(num_frames=3, resolution=40, train_views=2, test_views=2)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return load_sample(SMALL, cache_dir=tmp_path_factory.mktemp("cache"))


def test_sample_ground_truth_cameras_round_trip_to_the_same_pixels(sample, tmp_path):
    """Write the sample's own held-out views, read them back, and re-render from the cameras read back."""
    write_dnerf(tmp_path / "scene", {"train": sample.train, "test": sample.test})
    scene = read_dnerf(tmp_path / "scene")
    assert scene.val is None
    back = scene.test
    assert torch.equal(back.rgb, sample.test.rgb) and torch.equal(back.alpha, sample.test.alpha)  # 8-bit exact
    assert torch.equal(back.times, sample.test.times)
    assert torch.allclose(back.cameras.viewmats, sample.test.cameras.viewmats, atol=1e-5)
    assert torch.allclose(back.cameras.Ks, sample.test.cameras.Ks, rtol=1e-5)
    again = sample.render_views(back.cameras, back.times)
    diff = (again.rgb - sample.test.rgb).abs()
    assert diff.max() <= 1.5 / 255 and diff.mean() < 1e-4
    assert (again.alpha - sample.test.alpha).abs().max() <= 1.5 / 255


def _blender_front_camera(distance: float = 4.0) -> list[list[float]]:
    """Blender camera at (0, -d, 0) looking at the origin, up = +z (camera -z forward, +y up)."""
    return [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, -distance], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]


def _write_scene(folder, frames, size=8, angle=2 * math.atan(0.5), channels=4, splits=("train",)):
    """A hand-written scene: each frame dict's file gets a ``size`` x ``size`` image unless ``"_no_image"``."""
    for split in splits:
        (folder / split).mkdir(parents=True, exist_ok=True)
        out = []
        for i, frame in enumerate(frames):
            frame = dict(frame)
            frame.setdefault("file_path", f"./{split}/r_{i:03d}")
            frame.setdefault("time", i / max(len(frames) - 1, 1))
            frame.setdefault("transform_matrix", _blender_front_camera())
            s = frame.pop("_size", size)
            if not frame.pop("_no_image", False):
                name = frame["file_path"] if frame["file_path"].endswith(".png") else frame["file_path"] + ".png"
                img = np.full((s, s, channels), 200, dtype=np.uint8)
                iio.imwrite(folder / name, img, extension=".png")
            out.append(frame)
        meta = {"frames": out} if angle is None else {"camera_angle_x": angle, "frames": out}
        (folder / f"transforms_{split}.json").write_text(json.dumps(meta))
    return folder


def test_blender_axes_map_to_text4d_conventions(tmp_path):
    """Independent of the writer: Blender's front camera is our front camera, and Blender's +z is our up."""
    _write_scene(tmp_path, [{}], size=16)
    views = read_split(tmp_path, "train")
    expected = Cameras.orbit(0.0, 0.0, 4.0, math.degrees(2 * math.atan(0.5)), 16, 16).reshape(1)
    assert torch.allclose(views.cameras.viewmats, expected.viewmats, atol=1e-6)
    assert torch.allclose(views.cameras.Ks, expected.Ks, atol=1e-5)
    assert views.cameras.Ks[0, 0, 0].item() == pytest.approx(16.0)  # camera_angle_x = 2 atan(1/2): focal = width
    uv, depth = project(torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]), views.cameras)
    assert uv[0, 0].tolist() == pytest.approx([8.0, 8.0])  # the origin at the image centre
    assert uv[0, 1, 1] < 8.0  # our +y (Blender +z) is up in the image
    assert uv[0, 2, 0] > 8.0  # +x is to the right, as in Blender's front view
    assert depth[0, 0].item() == pytest.approx(4.0)


def test_file_path_with_or_without_png_and_resolution(tmp_path):
    _write_scene(tmp_path, [{"file_path": "./train/a.png"}, {"file_path": "./train/b"}], size=16)
    assert read_split(tmp_path, "train", max_width=32).width == 16  # never upscaled
    views = read_split(tmp_path, "train", max_width=8)
    assert views.rgb.shape == (2, 8, 8, 3) and views.cameras.width == 8
    assert views.cameras.Ks[0, 0, 0].item() == pytest.approx(8.0)  # focal halves with the width
    assert torch.allclose(views.rgb, torch.full_like(views.rgb, 200 / 255))


def test_rgb_images_warn_and_get_an_opaque_mask(tmp_path, caplog):
    _write_scene(tmp_path, [{}, {}], channels=3)
    with caplog.at_level(logging.WARNING):
        views = read_split(tmp_path, "train")
    assert torch.all(views.alpha == 1.0)
    assert "no alpha channel" in caplog.text and "r_000.png" in caplog.text


def test_unknown_keys_warn_and_rotation_is_accepted(tmp_path, caplog):
    _write_scene(tmp_path, [{"rotation": 0.03}, {"rotation": 0.03, "depth_path": "x"}])
    meta = json.loads((tmp_path / "transforms_train.json").read_text())
    meta["aabb"] = [0, 1]
    (tmp_path / "transforms_train.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING):
        read_split(tmp_path, "train")
    assert "depth_path" in caplog.text and "frame 1" in caplog.text and "aabb" in caplog.text
    assert "rotation" not in caplog.text


@pytest.mark.parametrize(
    "frames, kwargs, match",
    [
        ([{}, {"time": 1.5}], {}, r"frame 1 of .*transforms_train.json: 'time' 1.5 is outside \[0, 1\]"),
        ([{}, {"time": "soon"}], {}, r"frame 1 .*'time' must be a number"),
        ([{}, {"_no_image": True}], {}, r"frame 1 of .*transforms_train.json: image .*r_001.png is listed but absent"),
        ([{}, {"_size": 10}], {}, r"frame 1 of .*: image .*r_001.png is 10x10 but .*r_000.png is 8x8"),
        ([{}], {"angle": None}, r"transforms_train.json has no 'camera_angle_x'"),
        ([{}], {"angle": 4.0}, r"'camera_angle_x' must be a number of radians"),
        ([{}, {"transform_matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}], {}, r"frame 1 .*finite 4x4"),
        ([{}, {"transform_matrix": [[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]}], {}, r"frame 1 .*not a rigid"),
    ],
)
def test_bad_frames_name_the_file_and_frame(tmp_path, frames, kwargs, match):
    _write_scene(tmp_path, frames, **kwargs)
    with pytest.raises(InputError, match=match):
        read_split(tmp_path, "train")


@pytest.mark.parametrize("key", ["file_path", "time", "transform_matrix"])
def test_missing_frame_key_is_an_error_naming_it(tmp_path, key):
    _write_scene(tmp_path, [{}, {}])
    meta = json.loads((tmp_path / "transforms_train.json").read_text())
    del meta["frames"][1][key]
    (tmp_path / "transforms_train.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=rf"frame 1 of .*transforms_train.json .*has no '{key}'"):
        read_split(tmp_path, "train")


def test_bad_folders_and_json(tmp_path, caplog):
    with pytest.raises(InputError, match="does not exist"):
        read_dnerf(tmp_path / "nowhere")
    with pytest.raises(InputError, match="transforms_train.json does not exist"):
        read_dnerf(tmp_path)
    (tmp_path / "transforms_train.json").write_text("{not json")
    with pytest.raises(InputError, match="transforms_train.json is not readable JSON"):
        read_dnerf(tmp_path)
    (tmp_path / "transforms_train.json").write_text(json.dumps({"camera_angle_x": 0.7, "frames": []}))
    with pytest.raises(InputError, match="non-empty list 'frames'"):
        read_dnerf(tmp_path)
    _write_scene(tmp_path, [{}, {}])
    with caplog.at_level(logging.WARNING):
        scene = read_dnerf(tmp_path)
    assert scene.test is None and scene.val is None and len(scene.train) == 2
    assert "transforms_test.json does not exist" in caplog.text


def test_writer_refuses_cameras_it_cannot_store(sample, tmp_path):
    views = sample.test
    Ks = views.cameras.Ks.clone()
    Ks[1, 0, 0] *= 1.5
    bad = type(views)(views.rgb, views.alpha, Cameras(views.cameras.viewmats, Ks, views.width, views.height), views.times)
    with pytest.raises(ValueError, match="one field of view"):
        write_dnerf(tmp_path / "scene", {"train": bad})
    assert not (tmp_path / "scene").exists()  # nothing half-written
