"""The built-in sample: sensible images, real motion, determinism, and a cache that cannot hurt."""

from __future__ import annotations

import logging
import time

import pytest
import torch

from text4d.errors import ConfigError
from text4d.samples import SampleConfig, heldout_angles, load_sample, train_angles
from text4d.timing import frame_times

# Small enough to render in about a second, big enough for the creature to have limbs.
SMALL = SampleConfig(num_frames=5, resolution=96, train_views=4, test_views=3)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return load_sample(SMALL, cache_dir=tmp_path_factory.mktemp("cache"))


def test_shapes_ranges_and_layout(sample):
    t, r = SMALL.num_frames, SMALL.resolution
    assert sample.driving.rgb.shape == (t, r, r, 3) and sample.driving.alpha.shape == (t, r, r, 1)
    assert len(sample.train) == t * SMALL.train_views and len(sample.test) == t * SMALL.test_views
    for views in (sample.driving, sample.train, sample.test):
        for img in (views.rgb, views.alpha):
            assert img.dtype == torch.float32 and img.min() >= 0 and img.max() <= 1
        assert torch.all(views.rgb[views.alpha[..., 0] == 0] == 0), "background RGB is 0"
    assert torch.equal(sample.driving.times, frame_times(t))
    # Frame-major: the K training images of frame i come together, all at time t_i.
    assert torch.equal(sample.train.times, frame_times(t).repeat_interleave(SMALL.train_views))
    # The driving camera is the front camera: at +z, radius away.
    assert torch.allclose(sample.driving.cameras.centers, torch.tensor([0.0, 0.0, SMALL.radius]).expand(t, 3), atol=1e-5)
    # Antialiased edges: some alpha is strictly between 0 and 1.
    assert ((sample.driving.alpha > 0.1) & (sample.driving.alpha < 0.9)).any()


def test_camera_sets_are_disjoint():
    train, test = set(train_angles(4)), set(heldout_angles(4))
    assert train == {(0.0, 90.0), (0.0, 180.0), (0.0, 270.0), (30.0, 45.0)}
    assert not train & test and (0.0, 0.0) not in train | test
    assert len(test) == 4


def test_coverage_is_sensible(sample):
    for views in (sample.driving, sample.train, sample.test):
        coverage = views.alpha.mean(dim=(1, 2, 3))
        assert coverage.min() > 0.10 and coverage.max() < 0.60, coverage
        # Nothing touches the border: the whole creature is in view.
        a = views.alpha[..., 0]
        assert a[:, 0].max() == 0 and a[:, -1].max() == 0 and a[:, :, 0].max() == 0 and a[:, :, -1].max() == 0


def test_motion_is_real_and_loops(sample):
    mid = SMALL.num_frames // 2
    d = sample.driving
    # Limbs region: the outer thirds of the frame, where the arms wave; compare wherever either frame
    # shows the creature there (premultiplied colour, so a limb moving away counts).
    r = SMALL.resolution
    sides = torch.cat([d.rgb[:, :, : r // 3] * d.alpha[:, :, : r // 3], d.rgb[:, :, -r // 3 :] * d.alpha[:, :, -r // 3 :]], 2)
    seen = torch.cat([d.alpha[:, :, : r // 3], d.alpha[:, :, -r // 3 :]], 2)[..., 0] > 0
    region = seen[0] | seen[mid]
    assert region.sum() > 50
    assert (sides[0] - sides[mid]).abs().sum(-1)[region].mean() > 0.3
    # In 3D: the hands swing 0.2-0.6 units between t=0 and t=0.5 (opposite extremes), the whole surface moves.
    m0, m1 = sample.mesh_at(0.0), sample.mesh_at(0.5)
    tip = sample.creature.rest_verts[:, 0].argmax()  # the rest pose's rightmost point: the left hand
    assert 0.2 < (m0.verts[tip] - m1.verts[tip]).norm() < 0.6
    assert (m0.verts - m1.verts).norm(dim=-1).mean() > 0.05
    assert torch.allclose(sample.mesh_at(1.0).verts, m0.verts, atol=1e-5), "the clip loops"


def test_views_differ(sample):
    k = SMALL.train_views
    frame0 = sample.train.rgb[:k]
    for i in range(k):
        assert (frame0[i] - sample.driving.rgb[0]).abs().mean() > 0.02
        for j in range(i + 1, k):
            assert (frame0[i] - frame0[j]).abs().mean() > 0.02


def test_mesh_at(sample):
    mesh = sample.mesh_at(0.3)
    assert mesh.verts.shape[1] == 3 and mesh.faces.shape[1] == 3 and mesh.faces.max() < mesh.verts.shape[0]
    assert mesh.colors.shape == mesh.verts.shape and mesh.colors.min() >= 0 and mesh.colors.max() <= 1
    assert mesh.uv.shape == (mesh.verts.shape[0], 2) and mesh.uv.min() >= 0 and mesh.uv.max() <= 1
    assert 2000 < mesh.faces.shape[0] < 20000
    assert mesh.verts.norm(dim=-1).max() < 0.7


def test_render_views_reproduces_driving(sample):
    again = sample.render_views(sample.driving.cameras, sample.driving.times)
    assert torch.equal(again.rgb, sample.driving.rgb) and torch.equal(again.alpha, sample.driving.alpha)


def test_determinism_and_seed(tmp_path):
    cfg = SampleConfig(num_frames=2, resolution=48, train_views=1, test_views=1, seed=3)
    a = load_sample(cfg, use_cache=False)
    b = load_sample(cfg, use_cache=False)
    c = load_sample(SampleConfig(num_frames=2, resolution=48, train_views=1, test_views=1, seed=4), use_cache=False)
    assert torch.equal(a.driving.rgb, b.driving.rgb) and torch.equal(a.test.alpha, b.test.alpha)
    assert (a.driving.rgb - c.driving.rgb).abs().mean() > 0.01


def test_cache_hit_is_identical_and_faster(tmp_path):
    cfg = SampleConfig(num_frames=3, resolution=96, train_views=2, test_views=2)
    start = time.perf_counter()
    fresh = load_sample(cfg, cache_dir=tmp_path)
    generate = time.perf_counter() - start
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    assert not list(tmp_path.glob(".*")), "no temporary files left behind"
    start = time.perf_counter()
    cached = load_sample(cfg, cache_dir=tmp_path)
    hit = time.perf_counter() - start
    for name in ("driving", "train", "test"):
        assert torch.equal(getattr(fresh, name).rgb, getattr(cached, name).rgb)
        assert torch.equal(getattr(fresh, name).alpha, getattr(cached, name).alpha)
    assert hit < generate
    # Another config gets another file.
    load_sample(SampleConfig(num_frames=2, resolution=96, train_views=2, test_views=2), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_corrupt_cache_is_regenerated_with_a_warning(tmp_path, caplog):
    cfg = SampleConfig(num_frames=2, resolution=48, train_views=1, test_views=1)
    good = load_sample(cfg, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.npz")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated, as by a full disk
    with caplog.at_level(logging.WARNING, logger="text4d.samples"):
        again = load_sample(cfg, cache_dir=tmp_path)
    assert "unreadable" in caplog.text
    assert torch.equal(again.train.rgb, good.train.rgb)
    path.write_bytes(b"not a zip file at all")
    assert torch.equal(load_sample(cfg, cache_dir=tmp_path).driving.alpha, good.driving.alpha)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="text4d.samples"):
        load_sample(cfg, cache_dir=tmp_path)
    assert "unreadable" not in caplog.text, "the regenerated file was written back and now loads"


def test_bad_config_names_the_key():
    with pytest.raises(ConfigError, match="sample.num_frames"):
        load_sample(SampleConfig(num_frames=0), use_cache=False)
