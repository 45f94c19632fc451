"""kNN spacing used for initial Gaussian scales: exact against brute force."""

from __future__ import annotations

import pytest
import torch

from text4d.gaussians.knn import kd_leaves, knn_mean_sq_dist


def brute_force(points: torch.Tensor, k: int = 3) -> torch.Tensor:
    p = points.double()
    d = (p[:, None] - p[None]).square().sum(-1)
    d.fill_diagonal_(float("inf"))
    return d.topk(min(k, len(p) - 1), dim=1, largest=False).values.mean(1).clamp_min(1e-7)


CLOUDS = {
    "uniform": lambda g: torch.rand(1500, 3, generator=g),
    "anisotropic": lambda g: torch.randn(1500, 3, generator=g) * torch.tensor([10.0, 0.01, 1.0]),
    "two_clusters": lambda g: torch.cat([torch.randn(700, 3, generator=g) * 0.01, torch.randn(700, 3, generator=g) + 5.0]),
    "far_from_origin": lambda g: torch.rand(1500, 3, generator=g) * 0.01 + 100.0,
    "sphere_surface": lambda g: torch.nn.functional.normalize(torch.randn(1500, 3, generator=g), dim=-1),
}


@pytest.mark.parametrize("name", sorted(CLOUDS))
@pytest.mark.parametrize("leaf_size", [16, None])
def test_matches_brute_force(name: str, leaf_size: int | None) -> None:
    points = CLOUDS[name](torch.Generator().manual_seed(0))
    got = knn_mean_sq_dist(points, k=3, leaf_size=leaf_size)
    want = brute_force(points)
    assert got.shape == (len(points),) and got.dtype == points.dtype
    # exact up to float32 round-off of the final differences
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=0)


def test_small_clouds_and_duplicates() -> None:
    pts = torch.tensor([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0]])
    torch.testing.assert_close(knn_mean_sq_dist(pts), torch.tensor([25.0, 25.0]))  # k capped at N-1
    grid = torch.stack(torch.meshgrid(*(torch.arange(4.0),) * 3, indexing="ij"), -1).reshape(-1, 3)
    # interior points of a unit grid have 6 neighbours at distance 1
    d = knn_mean_sq_dist(grid * 0.5, k=3)
    torch.testing.assert_close(d, torch.full((64,), 0.25))
    dup = torch.cat([grid, grid[:5]])
    d = knn_mean_sq_dist(dup, k=1)
    assert torch.all(d[:5] == 1e-7) and torch.all(d[64:] == 1e-7)  # clamped, so log(sqrt(d)) is finite
    assert torch.isfinite(torch.log(d.sqrt())).all()


def test_kd_leaves_partition() -> None:
    points = torch.rand(1000, 3, generator=torch.Generator().manual_seed(1))
    order, starts, counts = kd_leaves(points, 100)
    assert sorted(order.tolist()) == list(range(1000))
    assert counts.sum() == 1000 and counts.max() <= 100 and counts.min() >= 50
    assert torch.equal(starts, torch.cumsum(counts, 0) - counts)


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match=r"points must be \[N, 3\]"):
        knn_mean_sq_dist(torch.rand(10, 2))
    with pytest.raises(ValueError, match="at least 2 points"):
        knn_mean_sq_dist(torch.rand(1, 3))
    with pytest.raises(ValueError, match="leaf_size"):
        knn_mean_sq_dist(torch.rand(10, 3), leaf_size=4)


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    points = torch.rand(20000, 3, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(knn_mean_sq_dist(points.cuda()).cpu(), knn_mean_sq_dist(points), rtol=1e-5, atol=0)
