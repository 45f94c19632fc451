"""Nearest-neighbour spacing of a point cloud, for initial Gaussian scales.

3DGS initialises each Gaussian's scale as ``sqrt`` of the mean squared distance
to its 3 nearest neighbours (simple-knn's ``distCUDA2``). This computes the same
quantity, exactly, in plain torch, on CPU or GPU, with bounded memory.

Brute force needs N^2 distances (10^12 for a million points), so the points are
first split into compact leaves of a balanced k-d tree (median splits along the
longest side, done with sorts, no Python recursion). For each leaf, a search
over the leaves whose bounding box lies within a typical neighbour distance of
it settles most of its points: a point whose k-th distance found is within that
radius cannot have a closer neighbour outside the searched leaves. The few
points left (typically near leaf corners) search again with their own, larger
radius. Distances are computed ``max_elems`` at a time.
"""

from __future__ import annotations

import torch
from torch import Tensor


def kd_leaves(points: Tensor, leaf_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Balanced k-d tree leaves of ``points`` [N, 3].

    Returns:
        order: permutation [N] putting each leaf's points together.
        starts, counts: leaf ranges in that order [L]; counts differ by at most one
            within a level and are at most ``leaf_size``.
    """
    n = points.shape[0]
    device = points.device
    order = torch.arange(n, device=device)
    seg = torch.zeros(n, dtype=torch.long, device=device)
    num_seg = 1
    while n > num_seg * leaf_size:
        p = points[order]
        index = seg[:, None].expand(-1, 3)
        lo = torch.full((num_seg, 3), float("inf"), dtype=p.dtype, device=device).scatter_reduce(0, index, p, "amin")
        hi = torch.full((num_seg, 3), float("-inf"), dtype=p.dtype, device=device).scatter_reduce(0, index, p, "amax")
        axis = (hi - lo).argmax(1)[seg]  # each segment splits along its longest side
        value = p.gather(1, axis[:, None])[:, 0]
        o = torch.argsort(value, stable=True)
        o = o[torch.argsort(seg[o], stable=True)]
        order, seg = order[o], seg[o]
        counts = torch.bincount(seg, minlength=num_seg)
        rank = torch.arange(n, device=device) - (torch.cumsum(counts, 0) - counts)[seg]
        seg = 2 * seg + (rank >= counts[seg] // 2).long()
        num_seg *= 2
    counts = torch.bincount(seg, minlength=num_seg)
    return order, torch.cumsum(counts, 0) - counts, counts


def knn_mean_sq_dist(points: Tensor, k: int = 3, leaf_size: int | None = None, max_elems: int = 1 << 24) -> Tensor:
    """Mean squared distance [N] from each point to its ``k`` nearest other points.

    Args:
        points: [N, 3], N >= 2; any device. Gradients are not tracked.
        k: neighbours averaged (all others when N <= k).
        leaf_size: most points per k-d leaf (the query batch); must exceed 2k. Each point
            searches about 27 leaves, so small leaves mean less arithmetic but more steps:
            default 1024 on CUDA (launch-bound), 128 on CPU (arithmetic-bound).
        max_elems: most pairwise distances held at once (the memory bound).

    Returns:
        [N] in the input's float dtype (float32 for integer input), clamped below at
        1e-7 as simple-knn does, so ``log(sqrt(d))`` stays finite for duplicates.
    """
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be [N, 3], got {tuple(points.shape)}")
    n = points.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 points to measure neighbour spacing, got {n}")
    if leaf_size is None:
        leaf_size = 1024 if points.device.type == "cuda" else 128
    if k < 1 or leaf_size <= 2 * k or max_elems < leaf_size * leaf_size:
        raise ValueError(f"need k >= 1, leaf_size > 2k and max_elems >= leaf_size^2, got k={k}, leaf_size={leaf_size}, max_elems={max_elems}")
    k = min(k, n - 1)
    pts = points.detach()
    if not pts.is_floating_point():
        pts = pts.float()
    order, starts, counts = kd_leaves(pts, leaf_size)
    sorted_pts = pts[order]
    leaf_of = torch.repeat_interleave(torch.arange(len(counts), device=pts.device), counts)
    index = leaf_of[:, None].expand(-1, 3)
    box_lo = torch.full((len(counts), 3), float("inf"), dtype=pts.dtype, device=pts.device).scatter_reduce(0, index, sorted_pts, "amin")
    box_hi = torch.full((len(counts), 3), float("-inf"), dtype=pts.dtype, device=pts.device).scatter_reduce(0, index, sorted_pts, "amax")
    ranges = torch.stack([starts, counts], 1).tolist()

    def search(query: Tensor, leaves: list[int], best: Tensor, is_own: bool = False) -> Tensor:
        """Merge the k nearest among ``leaves`` into ``best`` [Q, k] (squared distances).

        Candidates are ranked with the matrix-product expansion |q|^2 + |c|^2 - 2 q.c (fast
        BLAS) on coordinates centred on the query, which keeps the cancellation error small;
        the k survivors' distances are then recomputed directly.
        ``is_own``: ``query`` is the whole (single) leaf searched, so the diagonal is self.
        """
        step = max(1, max_elems // max(1, len(query)))
        centre = query.mean(0)
        q = query - centre
        q_sq = q.square().sum(-1, keepdim=True)  # [Q, 1]
        cand = torch.cat([torch.arange(ranges[leaf][0], ranges[leaf][0] + ranges[leaf][1], device=pts.device) for leaf in leaves])
        for c0 in range(0, len(cand), step):
            c = sorted_pts[cand[c0 : c0 + step]] - centre
            d = torch.addmm(c.square().sum(-1)[None], q, c.T, alpha=-2.0) + q_sq  # [Q, M]
            if is_own:
                d.fill_diagonal_(float("inf"))
            pick = d.topk(min(k, d.shape[1]), dim=1, largest=False).indices  # [Q, k]
            # Recompute the survivors directly: exact even for (near-)duplicates.
            near = (q[:, None] - c[pick]).square().sum(-1)
            best = torch.cat([best, near], dim=1).topk(k, dim=1, largest=False).values
        return best

    def leaves_within(leaf: int, sq_radius: Tensor) -> set[int]:
        gap = torch.maximum(box_lo - box_hi[leaf], box_lo[leaf] - box_hi).clamp_min(0)
        return set(torch.nonzero(gap.square().sum(-1) <= sq_radius).squeeze(1).tolist())

    out = torch.empty(n, dtype=pts.dtype, device=pts.device)
    for leaf, (s, c) in enumerate(ranges):
        query = sorted_pts[s : s + c]
        own = search(query, [leaf], torch.full((c, k), float("inf"), dtype=pts.dtype, device=pts.device), is_own=True)
        radius = own[:, -1].median()  # a typical k-th distance; most points settle within it
        near = leaves_within(leaf, radius)
        best = search(query, sorted(near - {leaf}), own) if len(near) > 1 else own
        todo = torch.nonzero(best[:, -1] > radius).squeeze(1)
        if len(todo):
            far = leaves_within(leaf, best[todo, -1].max()) - near
            if far:
                best[todo] = search(query[todo], sorted(far), best[todo])
        out[order[s : s + c]] = best.mean(1)
    return out.clamp_min(1e-7)
