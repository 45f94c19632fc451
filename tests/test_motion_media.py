"""Foreground matting + recentring, and image -> video with a tiny random Stable Video Diffusion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from text4d.errors import InputError, ModelFileError
from text4d.video.matting import estimate_alpha, foreground, recenter
from text4d.video.media import read_video, write_video


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


@pytest.fixture(scope="module")
def svd_dir(tmp_path_factory) -> Path:
    pytest.importorskip("diffusers")
    import torch
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("svd") / "svd"
    UNetSpatioTemporalConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=8, out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"), cross_attention_dim=32,
        num_attention_heads=(2, 4), projection_class_embeddings_input_dim=96, addition_time_embed_dim=32,
    ).save_pretrained(d / "unet")
    AutoencoderKLTemporalDecoder(block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
                                 down_block_types=["DownEncoderBlock2D"] * 2).save_pretrained(d / "vae")
    CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, projection_dim=32, num_hidden_layers=2, num_attention_heads=4, image_size=224,
        intermediate_size=37, patch_size=32)).save_pretrained(d / "image_encoder")
    EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", prediction_type="v_prediction",
                           interpolation_type="linear", sigma_max=700.0, sigma_min=0.002, steps_offset=1,
                           timestep_spacing="leading", timestep_type="continuous",
                           use_karras_sigmas=True).save_pretrained(d / "scheduler")
    CLIPImageProcessor(crop_size=224, size=224).save_pretrained(d / "feature_extractor")
    (d / "model_index.json").write_text('{"_class_name": "StableVideoDiffusionPipeline", '
                                        '"unet": ["diffusers", "UNetSpatioTemporalConditionModel"], '
                                        '"vae": ["diffusers", "AutoencoderKLTemporalDecoder"], '
                                        '"image_encoder": ["transformers", "CLIPVisionModelWithProjection"], '
                                        '"scheduler": ["diffusers", "EulerDiscreteScheduler"], '
                                        '"feature_extractor": ["transformers", "CLIPImageProcessor"]}')
    return d


def test_svd_image_to_video_from_a_local_folder(svd_dir, tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from text4d.video.commands import video_app

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
