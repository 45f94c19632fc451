import numpy as np
import pytest
import torch

from text4d.gaussians.model import GaussianModel, LearningRates, exp_decay
from text4d.gaussians.strategy import DensifyConfig, DensifyStrategy
from text4d.io.ply import load_ply, save_ply


def _model(n=40, degree=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return GaussianModel.random_ball(n, 0.5, degree, g)


def test_activations_and_splats_shapes():
    m = _model()
    s = m.splats()
    assert s.means.shape == (40, 3) and s.sh.shape == (40, 4, 3) and s.opacities.shape == (40,)
    assert torch.all((s.opacities > 0) & (s.opacities < 1)) and torch.all(s.scales > 0)
    assert torch.allclose(m.opacities, torch.full((40,), 0.1), atol=1e-5)


def test_knn_initial_scales_follow_spacing():
    dense = GaussianModel.from_points(torch.rand(200, 3) * 0.1, torch.rand(200, 3))
    sparse = GaussianModel.from_points(torch.rand(200, 3) * 10.0, torch.rand(200, 3))
    assert dense.scales.mean() * 20 < sparse.scales.mean()


def test_ply_round_trip_through_model(tmp_path):
    m = _model(degree=3)
    save_ply(tmp_path / "m.ply", m.to_ply())
    back = GaussianModel.from_ply(load_ply(tmp_path / "m.ply"))
    for name in ("means", "sh_dc", "sh_rest", "opacity_logits", "log_scales", "quats"):
        assert torch.equal(getattr(back, name), getattr(m, name)), name


def test_exp_decay_schedule():
    assert exp_decay(1e-3, 2e-5, 0.0) == pytest.approx(1e-3)
    assert exp_decay(1e-3, 2e-5, 1.0) == pytest.approx(2e-5)
    assert exp_decay(1e-3, 2e-5, 0.5) == pytest.approx(np.sqrt(1e-3 * 2e-5))


def test_keep_and_append_keep_adam_state_aligned():
    m = _model(n=10)
    opt = torch.optim.Adam(m.param_groups(LearningRates()), eps=1e-15)
    (m.means.square().sum() + m.sh.sum()).backward()
    opt.step()
    moments = opt.state[m.means]["exp_avg"].clone()
    keep = torch.tensor([True, False] * 5)
    m.keep(keep, opt)
    assert m.num == 5 and torch.equal(opt.state[m.means]["exp_avg"], moments[keep])
    m.append({name: getattr(m, name).detach()[:2].clone() for name in ("means", "sh_dc", "sh_rest", "opacity_logits", "log_scales", "quats")}, opt)
    assert m.num == 7
    assert torch.count_nonzero(opt.state[m.means]["exp_avg"][5:]) == 0
    assert all(g["params"][0].shape[0] == 7 for g in opt.param_groups)
    # the optimiser still steps the new tensors
    before = m.means.detach().clone()
    m.means.sum().backward()
    opt.step()
    assert not torch.equal(before, m.means)


def test_densify_clones_small_splits_large_and_prunes():
    m = GaussianModel.from_points(torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0], [3.0, 0, 0]]), torch.rand(4, 3))
    with torch.no_grad():
        m.log_scales[:] = torch.log(torch.tensor([[0.001] * 3, [0.5] * 3, [0.001] * 3, [0.001] * 3]))
        m.opacity_logits[3] = -10.0  # transparent: pruned
    opt = torch.optim.Adam(m.param_groups(LearningRates()))
    strat = DensifyStrategy(DensifyConfig(start=0, interval=1, grad_threshold=1e-3, max_world_scale=10.0), extent=1.0)
    strat.update(torch.tensor([1.0, 1.0, 0.0, 0.0]), torch.ones(4, dtype=torch.bool))
    changed = strat.step(m, opt, iteration=1)
    assert changed["cloned"] == 1 and changed["split"] == 1
    # 4 + 1 clone + 2 children - 1 split parent - 1 transparent = 5
    assert m.num == 5
    child_scales = m.scales.max(-1).values
    assert torch.isclose(child_scales, torch.tensor(0.5 / 1.6)).sum() == 2
    assert all(g["params"][0].shape[0] == 5 for g in opt.param_groups)


def test_densify_disabled_by_schedule_as_original():
    m = _model()
    strat = DensifyStrategy(DensifyConfig(), extent=1.0)  # start 3000: never within 500 iterations
    strat.update(torch.ones(m.num), torch.ones(m.num, dtype=torch.bool))
    assert strat.step(m, torch.optim.Adam(m.param_groups(LearningRates())), 100) == {}
    assert m.num == 40


def test_densify_respects_budget():
    m = _model(n=20)
    opt = torch.optim.Adam(m.param_groups(LearningRates()))
    strat = DensifyStrategy(DensifyConfig(start=0, interval=1, grad_threshold=0.0, min_opacity=0.0, max_gaussians=25, max_world_scale=100), extent=1.0)
    strat.update(torch.rand(20) + 0.1, torch.ones(20, dtype=torch.bool))
    strat.step(m, opt, 1)
    assert m.num <= 25  # clones and splits both add one net Gaussian
    assert m.num > 20
