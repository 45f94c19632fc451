"""Zero123 loading (all folder layouts, clear errors) and SDS maths, with tiny random models."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from text4d.errors import ModelFileError
from text4d.gaussians.model import GaussianModel
from text4d.guidance.novel import Zero123Views, orbit_params
from text4d.guidance.random_models import build_zero123, save_zero123
from text4d.guidance.sds import SDSConfig, Zero123Guidance, camera_embedding, timesteps
from text4d.guidance.zero123 import load_zero123
from text4d.render.camera import Cameras
from text4d.render.splat import render


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_zero123(build_zero123(tiny=True), tmp_path_factory.mktemp("zero123") / "tiny-zero123")


def test_load_roundtrip_both_projection_layouts(tiny_folder, tmp_path):
    built = build_zero123(tiny=True)
    loaded = load_zero123(tiny_folder)
    assert loaded.unet.config.in_channels == 8
    assert torch.equal(loaded.projection.weight, built.projection.weight)
    assert loaded.variant == "zero123" and loaded.clip_size == 32
    assert all(not p.requires_grad for m in loaded.modules() for p in m.parameters())
    old = tmp_path / "stable-zero123-old"
    shutil.copytree(tiny_folder, old)
    (old / "clip_camera_projection").rename(old / "cc_projection")
    again = load_zero123(old)
    assert torch.equal(again.projection.bias, built.projection.bias)
    assert again.variant == "stable"  # named like the original decides it
    assert load_zero123(old, variant="zero123").variant == "zero123"


def test_missing_and_wrong_files_name_the_file_and_flag(tiny_folder, tmp_path):
    with pytest.raises(ModelFileError, match=r"nowhere.*--zero123"):
        load_zero123(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_folder, broken)
    shutil.rmtree(broken / "clip_camera_projection")
    with pytest.raises(ModelFileError, match=r"clip_camera_projection.*772"):
        load_zero123(broken, key="zero123.path")
    shutil.copytree(tiny_folder / "clip_camera_projection", broken / "clip_camera_projection")
    cfg_file = broken / "unet" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["in_channels"] = 4
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match=r"unet/config.json.*in_channels=4"):
        load_zero123(broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(ModelFileError, match=r"missing vae/"):
        load_zero123(broken)


def test_camera_embedding_formula():
    d_el, d_az, d_r = torch.tensor([20.0, -10.0]), torch.tensor([90.0, -30.0]), torch.tensor([0.0, 0.3])
    e = camera_embedding(d_el, d_az, d_r, "zero123")
    # Our +20 (above) is DreamGaussian's -20; then [rad, sin, cos, radius].
    expected = torch.tensor([[math.radians(-20), 1.0, 0.0, 0.0], [math.radians(10), math.sin(math.radians(-30)), math.cos(math.radians(-30)), 0.3]])
    torch.testing.assert_close(e, expected, atol=1e-6, rtol=0)
    s = camera_embedding(d_el, d_az, d_r, "stable", ref_elevation=torch.tensor([15.0, 0.0]))
    torch.testing.assert_close(s[:, 3], torch.tensor([math.radians(90 - 15), math.radians(90)]))
    torch.testing.assert_close(s[:, :3], e[:, :3])


def test_noise_level_annealing_follows_the_schedule():
    code, paper = SDSConfig(), SDSConfig(max_noise=0.5)
    assert [int(timesteps(code, p, 1, 1000)[0]) for p in (0.0, 0.25, 0.5, 1.0)] == [980, 750, 500, 20]
    assert [int(timesteps(paper, p, 1, 1000)[0]) for p in (0.0, 0.4, 0.7, 1.0)] == [500, 500, 300, 20]
    r = timesteps(SDSConfig(schedule="random"), 0.3, 500, 1000, torch.Generator().manual_seed(0))
    assert r.min() >= 20 and r.max() <= 980 and r.float().std() > 100


def _guidance(tiny_folder, **kw) -> Zero123Guidance:
    g = Zero123Guidance(load_zero123(tiny_folder), SDSConfig(image_size=32, **kw))
    rgb = torch.rand(3, 32, 32, 3, generator=torch.Generator().manual_seed(1))
    g.set_references(rgb, torch.ones(3, 32, 32, 1))
    return g


def test_sds_gradients_reach_gaussians_not_the_model(tiny_folder):
    g = _guidance(tiny_folder)
    assert g.clip_embeds.shape == (3, 16) and g.ref_latents.shape == (3, 4, 16, 16)
    model = GaussianModel.random_ball(200, 0.5, generator=torch.Generator().manual_seed(0))
    ref = Cameras.orbit(torch.zeros(2), torch.zeros(2), 1.5, 49.1, 24, 24)
    term = Zero123Views(g, torch.tensor([0.0, 0.5, 1.0]), n_views=2)
    cams = term.cameras(torch.tensor([0.0, 1.0]), ref, torch.Generator().manual_seed(0))
    assert tuple(cams.batch_shape) == (2, 2)
    el, _, r = orbit_params(cams)
    assert el.abs().max() <= 30 and torch.allclose(r, torch.full_like(r, 1.5), atol=1e-4)
    assert term._last["frames"].tolist() == [[0, 0], [2, 2]]  # per-frame conditioning
    out = render(model.splats(), cams, torch.ones(3), backend="torch")
    loss = term.loss(out, torch.ones(3), progress=0.3)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert model.means.grad is not None and model.means.grad.abs().sum() > 0
    assert model.sh_dc.grad.abs().sum() > 0
    assert all(p.grad is None for m in g.models.modules() for p in m.parameters())


def test_encoding_is_the_vae_posterior_mean(tiny_folder):
    """Our direct encoder call must equal diffusers' ``encode(...).latent_dist.mode()``."""
    g = _guidance(tiny_folder)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ours = g._encode(x)
        theirs = g.models.vae.encode(2.0 * x - 1.0).latent_dist.mode() * g.models.latent_scale
    torch.testing.assert_close(ours, theirs)


def test_chunking_gives_the_same_gradient(tiny_folder):
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    grads = []
    for chunk in (0, 2):
        g = _guidance(tiny_folder, chunk=chunk)
        g.generator.manual_seed(0)
        x = images.clone().requires_grad_(True)
        frames, zeros = torch.tensor([0, 1, 2, 0]), torch.zeros(4)
        g.loss(x, frames, torch.tensor([5.0, -5.0, 0.0, 10.0]), torch.tensor([30.0, 60.0, 90.0, 180.0]), zeros, 0.5).backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def _resume_matches(build, tmp_path) -> None:
    """4 steps, checkpoint, 2 more == a fresh stage loaded from the checkpoint, 2 steps (parameters identical)."""
    from text4d.io.checkpoint import load_checkpoint, save_checkpoint

    stage = build()
    for _ in range(4):
        stage.step()
    save_checkpoint(stage.state_dict(), tmp_path / "ckpt")
    for _ in range(2):
        stage.step()
    resumed = build()
    resumed.load_state_dict(load_checkpoint(tmp_path / "ckpt"))
    for _ in range(2):
        resumed.step()
    assert resumed.iteration == stage.iteration == 6
    a, b = stage.state_dict(), resumed.state_dict()
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    for name in a.get("field", {}):
        assert torch.equal(a["field"][name], b["field"][name]), name


def test_animate_resume_continues_sds_bit_exactly(tmp_path, one_thread):
    from tests.support.media import write_clip
    from text4d.app.animate import KIND, build_animate_stage
    from text4d.app.runkind import load

    clip = write_clip(tmp_path / "clip", 3)
    models = build_zero123(tiny=True)
    # schedule=random makes the timestep generator matter too, not only the SDS noise.
    over = ["ref_size=16", "resolutions=[8,16,16]", "batch_size=2", "n_views=2", "iters=8", "init_points=60", "sds.image_size=16", "sds.schedule=random",
            "backend=torch", "device=cpu", f"frames={clip}"]
    cfg = load(KIND, "configs/dynamic/4d.yaml", over)
    _resume_matches(lambda: build_animate_stage(cfg, torch.device("cpu"), None, {"zero123": models}), tmp_path)


def test_static_resume_continues_sds_bit_exactly(tmp_path, one_thread):
    from text4d.stages.static import StaticConfig, StaticStage

    models = build_zero123(tiny=True)
    rgb = torch.zeros(16, 16, 3)
    rgb[4:12, 4:12] = torch.tensor([0.9, 0.2, 0.1])
    alpha = torch.zeros(16, 16, 1)
    alpha[4:12, 4:12] = 1.0
    cfg = StaticConfig(iters=8, ref_size=16, resolutions=[16, 16, 16], num_pts=60, backend="torch", batch_size=2)
    cfg.sds.image_size, cfg.sds.schedule = 16, "random"

    def build() -> StaticStage:
        return StaticStage(cfg, rgb, alpha, guidance=Zero123Guidance(models, cfg.sds, "cpu"), device="cpu")

    _resume_matches(build, tmp_path)
