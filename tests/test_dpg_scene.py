"""The finished 4D result as a viser scene recording (a .viser file and a self-contained HTML page)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from tests.support.toy_stage import ToyStage
from text4d.render.sh import SH_C0

viser = pytest.importorskip("viser", reason="viewer extra not installed")


def decode(data: bytes) -> dict:
    """viser's .viser layout: [8-byte size] zstd([8-byte msgpack length] msgpack ...)."""
    import msgspec
    import zstandard

    inner = zstandard.ZstdDecompressor().decompress(data[8:], max_output_size=int.from_bytes(data[:8], "little"))
    n = int.from_bytes(inner[:8], "little")
    return msgspec.msgpack.decode(inner[8 : 8 + n])


def test_scene_recording_holds_every_frame_and_plays_them_in_turn(tmp_path) -> None:
    from text4d.export.scene import export_viser_scene

    stage = ToyStage(num_frames=4)
    html = export_viser_scene(stage, tmp_path / "scene", fps=8.0, loops=2)
    assert html == tmp_path / "scene" / "scene.html"
    page = html.read_text()
    assert "window.__VISER_EMBED_DATA__=" in page and "</html>" in page.lower()  # the client with the data inlined
    meta = decode((tmp_path / "scene" / "scene.viser").read_bytes())
    assert meta["durationSeconds"] == pytest.approx(2 * 4 / 8.0)
    kinds = Counter(m["type"] for _, m in meta["messages"])
    assert kinds["GaussianSplatsMessage"] == 4
    # Replaying the visibility messages in time order shows exactly one frame per 1/fps step: 0, 1, 2, 3, 0, 1, 2, 3.
    messages = meta["messages"]
    shown = []
    for step in range(8):
        visible: dict[str, bool] = {}
        for t, m in messages:  # the player's state after applying everything up to this step's time
            if m["type"] == "SetSceneNodeVisibilityMessage" and m["name"].startswith("/text4d/frame_") and t <= step / 8.0 + 1e-9:
                visible[m["name"]] = m["visible"]
        on = [name for name, v in sorted(visible.items()) if v]
        assert len(on) == 1, (step, on)
        shown.append(int(on[0][-3:]))
    assert shown == [0, 1, 2, 3, 0, 1, 2, 3]
    times = [t for t, _ in messages]
    assert times == sorted(times) and times[-1] < meta["durationSeconds"]


def test_splat_arrays_match_the_model():
    from text4d.export.scene import splat_arrays

    g = ToyStage().deformed_raw(0.5)
    centers, covs, rgbs, opacities = splat_arrays(g)
    n = len(g.means)
    assert centers.shape == (n, 3) and covs.shape == (n, 3, 3) and rgbs.shape == (n, 3) and opacities.shape == (n, 1)
    # Isotropic toy blobs: covariance = radius^2 I; colours and opacities are the activated parameters.
    radius = float(np.exp(g.log_scales[0, 0]))
    assert np.allclose(covs, np.eye(3) * radius**2, atol=1e-7)
    assert np.allclose(rgbs, np.clip(SH_C0 * g.sh[:, 0] + 0.5, 0, 1))
    assert np.allclose(opacities[:, 0], torch.sigmoid(torch.as_tensor(g.opacity_logits)).numpy(), atol=1e-6)
