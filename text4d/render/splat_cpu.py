"""The CPU compositor of the ``"cpu"`` backend: gsplat's tile rasteriser, written for the CPU with numba.

Same maths and rules as the pure-torch twin in :mod:`text4d.render.splat` (and as gsplat): each
pixel composites the Gaussians of its 16x16 tile front to back, skips those fainter than 1/255 and
stops before the one that would bring its transmittance to 1e-4. The backward pass walks each
pixel's list in reverse, rebuilding the transmittance by division (as gsplat does), so nothing but
the final transmittance and the last Gaussian's index is stored per pixel.

Why: the torch twin materialises every (pixel, Gaussian) pair as tensors and runs ~20 vectorised
ops over them, forward and backward; on a 2-core CPU a training step of the built-in sample took
seconds. These loops touch each pair a few times, in registers, in parallel over tiles (forward)
and over images (backward: each image's Gaussians are separate entries, so no two threads write
the same gradient, and the sums are deterministic whatever the thread count, which keeps CPU
replays bit-exact). numba compiles the loops on first use (a few seconds, cached on disk after).
"""

from __future__ import annotations

import math
import threading
from typing import NamedTuple

import numba
import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

TILE = 16
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
T_MIN = 1e-4


@njit(cache=True)
def _bin_tiles(image, x0, x1, y0, y1, images, tiles_x, tiles_y):  # pragma: no cover - compiled
    """Per tile, the boxes that touch it, in box order (boxes come sorted by image, then depth)."""
    per_image = tiles_x * tiles_y
    counts = np.zeros(images * per_image + 1, np.int64)
    for b in range(len(image)):
        base = image[b] * per_image
        for ty in range(y0[b] // TILE, (y1[b] - 1) // TILE + 1):
            for tx in range(x0[b] // TILE, (x1[b] - 1) // TILE + 1):
                counts[base + ty * tiles_x + tx + 1] += 1
    offsets = np.cumsum(counts)
    fill = offsets[:-1].copy()
    lists = np.empty(offsets[-1], np.int64)
    for b in range(len(image)):
        base = image[b] * per_image
        for ty in range(y0[b] // TILE, (y1[b] - 1) // TILE + 1):
            for tx in range(x0[b] // TILE, (x1[b] - 1) // TILE + 1):
                t = base + ty * tiles_x + tx
                lists[fill[t]] = b
                fill[t] += 1
    return offsets, lists


@njit(cache=True, inline="always")
def _pair(means2d, conics, opac, x0, x1, y0, y1, ids, b, x, y):  # pragma: no cover - compiled
    """(Gaussian id, dx, dy, exp(power), opacity * exp(power)) of box ``b`` at pixel (x, y); 0s outside its box."""
    g = ids[b]
    if x < x0[b] or x >= x1[b] or y < y0[b] or y >= y1[b]:
        return g, 0.0, 0.0, 0.0, 0.0
    dx = means2d[g, 0] - (x + 0.5)
    dy = means2d[g, 1] - (y + 0.5)
    power = -0.5 * (conics[g, 0] * dx * dx + conics[g, 2] * dy * dy) - conics[g, 1] * dx * dy
    if power > 0.0:
        return g, dx, dy, 0.0, 0.0
    vis = math.exp(power)
    return g, dx, dy, vis, opac[g] * vis


@njit(cache=True, parallel=True)
def _forward(means2d, conics, opac, feats, ids, x0, x1, y0, y1, offsets, lists, images, width, height, tiles_x, tiles_y, acc, trans, last):  # pragma: no cover - compiled
    per_image = tiles_x * tiles_y
    d = feats.shape[1]
    for t in prange(images * per_image):
        img = t // per_image
        ty = (t % per_image) // tiles_x
        tx = t % tiles_x
        start = offsets[t]
        end = offsets[t + 1]
        for y in range(ty * TILE, min(ty * TILE + TILE, height)):
            for x in range(tx * TILE, min(tx * TILE + TILE, width)):
                p = (img * height + y) * width + x
                T = 1.0
                done = start
                for k in range(start, end):
                    g, dx, dy, vis, raw = _pair(means2d, conics, opac, x0, x1, y0, y1, ids, lists[k], x, y)
                    a = min(raw, ALPHA_MAX)
                    if a < ALPHA_MIN:
                        continue
                    after = T * (1.0 - a)
                    if after <= T_MIN:
                        break
                    w = a * T
                    for c in range(d):
                        acc[p, c] += w * feats[g, c]
                    T = after
                    done = k + 1
                trans[p] = T
                last[p] = done


@njit(cache=True, parallel=True)
def _backward(means2d, conics, opac, feats, ids, x0, x1, y0, y1, offsets, lists, images, width, height, tiles_x, tiles_y, trans, last,
              g_acc, g_trans, v_means2d, v_conics, v_opac, v_feats):  # pragma: no cover - compiled
    per_image = tiles_x * tiles_y
    d = feats.shape[1]
    for img in prange(images):  # an image's Gaussians are its own entries: no two threads write the same gradient
        for r in range(per_image):
            t = img * per_image + r
            start = offsets[t]
            ty = r // tiles_x
            tx = r % tiles_x
            for y in range(ty * TILE, min(ty * TILE + TILE, height)):
                for x in range(tx * TILE, min(tx * TILE + TILE, width)):
                    p = (img * height + y) * width + x
                    final = trans[p]
                    T = final
                    behind = g_trans[p] * final  # d loss / d alpha of everything behind, times (1 - alpha)
                    for k in range(last[p] - 1, start - 1, -1):
                        g, dx, dy, vis, raw = _pair(means2d, conics, opac, x0, x1, y0, y1, ids, lists[k], x, y)
                        a = min(raw, ALPHA_MAX)
                        if a < ALPHA_MIN:
                            continue
                        T = T / (1.0 - a)
                        w = a * T
                        fg = 0.0
                        for c in range(d):
                            fg += feats[g, c] * g_acc[p, c]
                            v_feats[g, c] += w * g_acc[p, c]
                        v_alpha = T * fg - behind / (1.0 - a)
                        behind += w * fg
                        if raw <= ALPHA_MAX:
                            v_power = a * v_alpha
                            v_opac[g] += vis * v_alpha
                            v_conics[g, 0] += -0.5 * dx * dx * v_power
                            v_conics[g, 1] += -dx * dy * v_power
                            v_conics[g, 2] += -0.5 * dy * dy * v_power
                            v_means2d[g, 0] += -(conics[g, 0] * dx + conics[g, 1] * dy) * v_power
                            v_means2d[g, 1] += -(conics[g, 1] * dx + conics[g, 2] * dy) * v_power


class _Gaussians2D(NamedTuple):
    """The differentiable inputs of the kernels, as numpy arrays (and their gradients, in the same layout)."""

    means2d: np.ndarray
    conics: np.ndarray
    opacities: np.ndarray
    feats: np.ndarray


class _Geometry(NamedTuple):
    """The kernels' non-differentiable inputs: visible boxes, the tile lists and the image layout."""

    ids: np.ndarray
    x0: np.ndarray
    x1: np.ndarray
    y0: np.ndarray
    y1: np.ndarray
    offsets: np.ndarray
    lists: np.ndarray
    images: int
    width: int
    height: int
    tiles_x: int
    tiles_y: int


class _Composite(torch.autograd.Function):
    """Compositing as one autograd node: gradients for means2d, conics, opacities and features."""

    # Both outputs' gradients arrive as tensors (zeros for an unused one), never None.

    @staticmethod
    def forward(ctx, means2d, conics, opacities, feats, ids, image, x0, x1, y0, y1, images, width, height):
        tiles_x, tiles_y = -(-width // TILE), -(-height // TILE)
        bx0, bx1, by0, by1 = (t.numpy() for t in (x0, x1, y0, y1))
        offsets, lists = _bin_tiles(image.numpy(), bx0, bx1, by0, by1, images, tiles_x, tiles_y)
        arrays = _Gaussians2D._make(t.detach().contiguous().numpy() for t in (means2d, conics, opacities, feats))
        pixels = images * height * width
        acc = np.zeros((pixels, feats.shape[-1]), arrays.feats.dtype)
        trans = np.empty(pixels, arrays.feats.dtype)
        last = np.empty(pixels, np.int64)
        geometry = _Geometry(ids.numpy(), bx0, bx1, by0, by1, offsets, lists, images, width, height, tiles_x, tiles_y)
        with _threads():
            _forward(*arrays, *geometry, acc, trans, last)
        ctx.arrays, ctx.geometry, ctx.trans, ctx.last = arrays, geometry, trans, last
        return torch.from_numpy(acc), torch.from_numpy(trans)

    @staticmethod
    def backward(ctx, g_acc, g_trans):
        arrays: _Gaussians2D = ctx.arrays
        geometry: _Geometry = ctx.geometry
        grads = _Gaussians2D._make(np.zeros_like(a) for a in arrays)
        with _threads():
            _backward(*arrays, *geometry, ctx.trans, ctx.last, g_acc.contiguous().numpy(), g_trans.contiguous().numpy(), *grads)
        return (*(torch.from_numpy(g) for g in grads), *([None] * 9))


_ONE_AT_A_TIME = threading.Lock()


class _threads:
    """numba's thread pool sized like torch's (``--threads``, OMP_NUM_THREADS), for the duration of a call, one call at a time.

    The studios render from their own thread while training renders too. numba's threading layers are
    not all safe to enter from two Python threads at once: its fallback, ``workqueue`` (used where
    neither TBB nor GNU OpenMP is installed), aborts the process on concurrent access. Each call
    already uses every core, so taking turns costs nothing.
    """

    def __enter__(self) -> None:
        _ONE_AT_A_TIME.acquire()
        self.before = numba.get_num_threads()
        # numba.config sets its settings through globals(), where the type checker cannot see them
        numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]

    def __exit__(self, *exc: object) -> None:
        numba.set_num_threads(self.before)
        _ONE_AT_A_TIME.release()


def composite(
    means2d: Tensor,  # [I*N, 2]
    conics: Tensor,  # [I*N, 3]
    opacities: Tensor,  # [I*N]
    feats: Tensor,  # [I*N, D]
    ids: Tensor,  # [V] visible Gaussians (flat ids), sorted by image then depth
    image: Tensor,  # [V] their image
    x0: Tensor,  # [V] pixel box, clipped to the image: columns [x0, x1), rows [y0, y1)
    x1: Tensor,
    y0: Tensor,
    y1: Tensor,
    images: int,
    width: int,
    height: int,
) -> tuple[Tensor, Tensor]:
    """Premultiplied features [I*H*W, D] and transmittance [I*H*W] (CPU tensors, float32 or float64)."""
    return _Composite.apply(means2d, conics, opacities, feats, ids, image, x0, x1, y0, y1, images, width, height)
