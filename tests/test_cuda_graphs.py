"""CUDA-graph replays must equal eager runs: the deformation query (through edits and densification) and training passes."""

import copy
import threading

import pytest
import torch

from text4d.accel.cuda_graphs import GraphCache, StepGraphs
from text4d.app.sample import SampleRun, build_sample_stage
from text4d.config import load_config

needs_cuda = pytest.mark.gpu

TINY = ["sample.resolution=64", "sample.num_frames=4", "sample.supersample=1", "ref_size=64", "batch_size=2", "n_views=1",
        "init_points=2000", "static_iters=2", "iters=40", "densify.start=5", "densify.interval=5", "densify.end=30", "densify.grad_threshold=0"]


def _stage():
    cfg = load_config(SampleRun, None, TINY + ["device=cuda"])
    stage = build_sample_stage(cfg, torch.device("cuda"))
    for _ in range(4):
        stage.step()
    return stage


def _eager(stage, t):
    stage.cfg.cuda_graph = False
    try:
        return stage.deformed(t)
    finally:
        stage.cfg.cuda_graph = True


@torch.no_grad()
def _check_equal(stage, t):
    graphed, eager = stage.deformed(t), _eager(stage, t)
    for name in ("means", "quats", "scales", "opacities", "sh"):
        torch.testing.assert_close(getattr(graphed, name), getattr(eager, name), rtol=1e-5, atol=1e-6, msg=name)


@needs_cuda
def test_graph_matches_eager_and_follows_training():
    stage = _stage()
    t = torch.tensor([0.0, 0.5, 1.0], device="cuda")
    _check_equal(stage, t)
    captures = stage._deform_graphs.captures
    for _ in range(3):  # optimiser steps update parameters in place: the same graph sees them
        stage.step()
    _check_equal(stage, t)
    n0 = stage.num_gaussians
    while stage.num_gaussians == n0 and stage.iteration < stage.iters:  # densification replaces the tensors
        stage.step()
    assert stage.num_gaussians != n0
    _check_equal(stage, t)
    assert stage._deform_graphs.captures > captures


@needs_cuda
def test_outputs_survive_the_next_replay_and_threads():
    stage = _stage()
    with torch.no_grad():
        first = stage.deformed(torch.tensor([0.0], device="cuda")).means.clone()
        kept = stage.deformed(torch.tensor([0.0], device="cuda")).means
        stage.deformed(torch.tensor([1.0], device="cuda"))
    torch.testing.assert_close(kept, first)
    errors = []

    def worker(value):
        try:
            with torch.no_grad():
                for _ in range(20):
                    _check_equal(stage, torch.tensor([value], device="cuda"))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(v,)) for v in (0.2, 0.8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors


class _Holder:
    def __init__(self):
        self.value = torch.ones(3)
        self.cache = GraphCache(self.double)

    def double(self, x):
        return (x * 2 * self.value,)


def test_a_copied_cache_starts_empty_and_serves_the_copy():
    """Exports deep-copy the stage: the copy's cache must not replay graphs that read the original's tensors."""
    holder = _Holder()
    twin = copy.deepcopy(holder)
    assert twin.cache is not holder.cache and twin.cache.captures == 0
    assert twin.cache.fn.__self__ is twin


@needs_cuda
def test_export_copy_after_capture_renders_like_the_original():
    stage = _stage()
    t = torch.tensor([0.3], device="cuda")
    with torch.no_grad():
        original = stage.deformed(t).means
        frozen = stage.export_copy()
        copied = frozen.deformed(t).means
    torch.testing.assert_close(copied, original)
    assert frozen.novel is stage.novel and frozen.model.means.data_ptr() != stage.model.means.data_ptr()


def test_step_graphs_off_cuda_just_call_the_pass():
    graphs = StepGraphs()
    assert graphs(("k",), lambda x: x * 2, x=torch.ones(2)).tolist() == [2.0, 2.0] and graphs.captures == 0


@needs_cuda
def test_step_graph_training_matches_eager_training():
    """Eager first, captured second, replayed after; gradients land in the same .grad tensors throughout."""

    def train(graphs: StepGraphs) -> tuple[list[float], torch.Tensor]:
        torch.manual_seed(0)
        first = torch.nn.Linear(8, 32)
        net = torch.nn.Sequential(first, torch.nn.GELU(), torch.nn.Linear(32, 1)).cuda()
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        StepGraphs.prepare_grads(list(net.parameters()))
        grads = [p.grad for p in net.parameters()]

        def step(x, y):
            loss = (net(x) - y).square().mean()
            loss.backward()
            return loss.detach()

        g = torch.Generator().manual_seed(1)
        losses = []
        for _ in range(6):
            x, y = torch.randn(16, 8, generator=g).cuda(), torch.randn(16, 1, generator=g).cuda()
            losses.append(graphs(("step",), step, x=x, y=y).item())
            opt.step()
            opt.zero_grad(set_to_none=False)
        assert all(p.grad is g for p, g in zip(net.parameters(), grads))  # the graph writes where Adam reads
        return losses, first.weight.detach().clone()

    graphs = StepGraphs()
    replayed, w_replayed = train(graphs)
    eager, w_eager = train(StepGraphs(enabled=False))
    assert graphs.captures == 1
    assert replayed == pytest.approx(eager, rel=1e-5)
    torch.testing.assert_close(w_replayed, w_eager)


@needs_cuda
@pytest.mark.parametrize("autotune", [False, True])
def test_a_new_shape_is_captured_at_once_unless_cudnn_autotunes(autotune, monkeypatch):
    """After the first capture, a new key skips its eager run (whose activations would sit outside
    the shared pool), except while cuDNN autotuning would time kernels inside the capture."""
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", autotune)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(16, 4, 3, padding=1)).cuda()

    def input_gradient(x):
        leaf = x.detach().requires_grad_(True)
        loss = net(leaf).square().sum()
        return loss.detach(), torch.autograd.grad(loss, leaf)[0]

    graphs = StepGraphs()
    for _ in range(2):
        graphs(("a",), input_gradient, x=torch.randn(2, 3, 8, 8, device="cuda"))
    assert graphs.captures == 1
    for call in range(2):
        x = torch.randn(3, 3, 16, 16, device="cuda")
        ours, theirs = graphs(("b",), input_gradient, x=x), input_gradient(x)
        assert graphs.captures == (2 if not autotune or call == 1 else 1)
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b)
