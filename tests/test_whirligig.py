"""The second procedural test scene: geometry and motion, specular shading, export in the D-NeRF layout."""

import math

import pytest
import torch
from typer.testing import CliRunner

from text4d.io.dnerf import read_dnerf
from text4d.recon import scene_for_rendering
from text4d.render.camera import Cameras
from text4d.samples import make_scene, render_views
from text4d.samples.whirligig import PIVOTS, ROTOR_CENTRE


@pytest.fixture(scope="module")
def whirligig():
    return scene_for_rendering("whirligig", 0)


def test_parts_move_as_designed_and_the_clip_loops(whirligig):
    names = [p.name for p in whirligig.parts]
    v = whirligig.verts_at(torch.tensor([0.0, 0.125, 0.5, 1.0]))
    assert v.norm(dim=-1).max() < 0.56  # framed by the sample's cameras
    assert torch.allclose(v[0], v[3], atol=1e-5)  # loops
    still = whirligig.part_of == names.index("post")
    assert torch.equal(v[0, still], v[1, still])
    rotor = whirligig.part_of == names.index("rotor")
    c = torch.tensor(ROTOR_CENTRE)
    # Two turns per loop: at t=1/8 the rotor has turned 90 degrees about y.
    rel0, rel1 = v[0, rotor] - c, v[1, rotor] - c
    expected = torch.stack([rel0[:, 2], rel0[:, 1], -rel0[:, 0]], -1)
    assert torch.allclose(rel1, expected, atol=1e-5) or torch.allclose(rel1, -expected * torch.tensor([1.0, -1.0, 1.0]), atol=1e-5)
    arm = whirligig.part_of == names.index("arm_l")
    pivot = torch.tensor(PIVOTS["arm_l"])
    lengths = (v[:, arm] - pivot).norm(dim=-1)
    assert torch.allclose(lengths[0], lengths[2], atol=1e-5) and not torch.allclose(v[0, arm], v[2, arm])  # rigid swing
    jelly = whirligig.part_of == names.index("jelly")
    dense = whirligig.verts_at(torch.linspace(0, 1, 17))[:, jelly, 1]
    extent = dense.amax(1) - dense.amin(1)
    assert (extent.max() - extent.min()) > 0.08  # squashes and stretches


def test_specular_highlight_follows_the_view(whirligig):
    cams = Cameras.orbit(torch.tensor([10.0, 10.0]), torch.tensor([0.0, 40.0]), 2.0, 49.1, 48, 48)
    views = render_views(whirligig, cams, torch.zeros(2))
    assert views.rgb.shape == (2, 48, 48, 3) and (views.alpha > 0.5).float().mean() > 0.03
    plain = make_scene("whirligig", 0)
    plain.shininess = torch.zeros_like(plain.shininess)
    matte = render_views(plain, cams, torch.zeros(2))
    brighter = (views.rgb - matte.rgb).sum(-1)
    assert brighter.min() >= 0 and brighter.max() > 0.2  # a white highlight, only added
    assert not torch.equal(brighter[0] > 0.05, brighter[1] > 0.05)


def test_unknown_scene_is_refused():
    with pytest.raises(ValueError, match="whirligig"):
        make_scene("nosuch")


def test_cli_exports_the_whirligig_in_the_dnerf_layout(tmp_path):
    from cli import app

    out = tmp_path / "whirligig"
    result = CliRunner().invoke(app, ["sample", "export", str(out), "--scene", "whirligig", "--train", "4", "--val", "0", "--test", "2", "--resolution", "24"])
    assert result.exit_code == 0, result.output
    scene = read_dnerf(out)
    assert len(scene.train) == 4 and len(scene.test) == 2 and scene.train.width == 24
    assert (scene.train.alpha.mean(dim=(1, 2, 3)) > 0.02).all()
    bad = CliRunner().invoke(app, ["sample", "export", str(out), "--scene", "nosuch"])
    assert bad.exit_code != 0 and "--scene must be one of creature, whirligig" in str(bad.exception)
    assert math.isclose(float(scene.test.times[-1]), 1.0)
