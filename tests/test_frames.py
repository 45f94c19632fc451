"""Frame folders: numbering, gaps named in the error, RGB matting fallback, Consistent4D ground truth."""

from __future__ import annotations

import pytest
import torch

from tests.support.media import write_clip
from text4d.errors import InputError
from text4d.io.frames import (
    GroundTruthLayout,
    frames_to_views,
    list_frames,
    read_frames,
    read_ground_truth,
)


def test_numbered_frames_in_order_and_downsampled(tmp_path):
    clip = write_clip(tmp_path / "rose", 12)  # 0.png .. 11.png: plain numbers sort as numbers
    assert [p.name for p in list_frames(clip)][:3] == ["0.png", "1.png", "2.png"]
    rgb, alpha, paths = read_frames(clip, downsample=2)
    assert rgb.shape == (6, 16, 16, 3) and alpha.shape == (6, 16, 16, 1)
    assert [p.name for p in paths] == ["0.png", "2.png", "4.png", "6.png", "8.png", "10.png"]
    assert torch.allclose(rgb[1, 0, 0, 0], torch.tensor(20 / 255))
    assert alpha[0, 8, 8, 0] == 1.0 and alpha[0, 0, 0, 0] == 0.0
    views = frames_to_views(rgb, alpha, radius=1.5, fovy=49.1)
    assert torch.allclose(views.times, torch.linspace(0, 1, 6))
    assert torch.allclose(views.cameras.centers, torch.tensor([0.0, 0.0, 1.5]).expand(6, 3), atol=1e-5)


def test_missing_frame_names_the_file(tmp_path):
    clip = write_clip(tmp_path / "padded", 6, fmt="{:03d}.png", skip=(3,))
    with pytest.raises(InputError, match=r"003\.png is missing"):
        list_frames(clip)
    plain = write_clip(tmp_path / "plain", 5, skip=(2,))
    with pytest.raises(InputError, match=r"plain/2\.png is missing"):
        read_frames(plain)
    with pytest.raises(InputError, match="does not exist"):
        list_frames(tmp_path / "nope")


def test_rgb_frames_get_a_mask(tmp_path):
    clip = write_clip(tmp_path / "rgb", 3, rgba=False)
    _, alpha, _ = read_frames(clip)
    assert alpha.shape == (3, 16, 16, 1) and alpha[0, 8, 8, 0] > 0.5 and alpha[0, 0, 0, 0] < 0.5


def test_consistent4d_ground_truth(tmp_path):
    clip = write_clip(tmp_path / "blooming_rose", 4)
    assert read_ground_truth(clip, GroundTruthLayout(), 1.5, 49.1) is None
    for k in range(4):
        write_clip(clip / "gt" / f"eval_{k}", 4)
    gt = read_ground_truth(clip, GroundTruthLayout(), 1.5, 49.1)
    assert len(gt) == 16
    az = torch.rad2deg(torch.atan2(gt.cameras.centers[:, 0], gt.cameras.centers[:, 2]))
    torch.testing.assert_close(az[::4], torch.tensor([45.0, 135.0, -135.0, -45.0]), atol=1e-3, rtol=0)
    with pytest.raises(InputError, match="4 eval_\\* folders but 2"):
        read_ground_truth(clip, GroundTruthLayout(azimuths=[0.0, 90.0]), 1.5, 49.1)
