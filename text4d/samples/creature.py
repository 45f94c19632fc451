"""A procedural creature: textured parametric parts, linear-blend skinned, animated in a loop.

Why a creature and not Gaussians: the sample must be something the 4D pipeline
has to *fit*, with ground truth from every camera and time. It is built from
closed parametric surfaces (an ellipsoid body and head, capsule limbs, a tail,
eyes, feet, antennae) that overlap where they join, like a toy; the union is what
the cameras see. Every part has its own chart in one texture atlas, baked from a
colour function of the rest-pose surface point (belly patch, back stripes,
spots, limb rings, pupils), so the pattern sticks to the surface as it moves
and the front, sides and back look different.

Motion: a small skeleton (hips, chest, head, arms, legs, tail, antennae) with
affine bone transforms. The chest bends over the hips and the body squashes
and stretches (non-rigid), arms wave in alternation, legs swing, the tail wags,
the head turns. Every angle is ``amp * sin(2 pi k t + phase)`` (or cos) with integer k,
so the clip loops (t=0 and t=1 are the same pose). Skinning weights blend each
part's bone with its parent's by the rest-pose distance along the bone from its
joint (a smoothstep), so joints bend smoothly instead of tearing.

World frame per :mod:`text4d.render.camera`: y up, the creature faces +z (the
front camera), every pose within 0.56 of the origin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from text4d.render.camera import Cameras
from text4d.render.mesh_raster import Fragments, interpolate, rasterize, texture

BONES = ("hips", "chest", "head", "arm_l", "arm_r", "leg_l", "leg_r", "tail", "antenna_l", "antenna_r")
_PARENT = {"hips": None, "chest": "hips", "head": "chest", "arm_l": "chest", "arm_r": "chest", "leg_l": "hips", "leg_r": "hips", "tail": "hips",
           "antenna_l": "head", "antenna_r": "head"}
# Joint (pivot) of each bone in the rest pose.
_JOINT = {
    "hips": (0.0, -0.30, 0.0),
    "chest": (0.0, -0.06, 0.0),
    "head": (0.0, 0.17, 0.01),
    "arm_l": (0.17, 0.06, 0.0),
    "arm_r": (-0.17, 0.06, 0.0),
    "leg_l": (0.10, -0.22, 0.0),
    "leg_r": (-0.10, -0.22, 0.0),
    "tail": (0.0, -0.14, -0.15),
    "antenna_l": (0.06, 0.43, 0.0),
    "antenna_r": (-0.06, 0.43, 0.0),
}
_SCALE, _LIFT = 0.85, -0.02  # model units -> world (see Creature.bone_transforms)
ATLAS_CELLS = 4  # the atlas is a 4x4 grid of part charts
CHART_MARGIN = 2  # texels of bleed around each chart so bilinear lookups never mix parts


@dataclass(frozen=True)
class _Part:
    """One closed parametric surface.

    The surface sweeps a (possibly elliptic) circle from ``start`` (b=0) to ``end``
    (b=1): the first ``cap`` of b is a half-sphere cap around ``start``, the last
    ``cap`` one around ``end``, and the middle a tapered cylinder. ``cap=0.5`` gives an
    ellipsoid centred between ``start`` and ``end`` with semi-axes ``squash`` (times
    ``radius``). ``a`` in [0, 1] runs around the axis. Coordinates are model units.
    """

    name: str
    bone: str
    start: tuple[float, float, float]
    end: tuple[float, float, float]
    radius: tuple[float, float]  # at start, at end
    squash: tuple[float, float, float] = (1.0, 1.0, 1.0)  # scale along (axis, side1, side2)
    cap: float = 0.3
    n_lat: int = 16
    n_lon: int = 24
    style: str = "limb"
    blend: float = 0.0  # length over which weights go from parent to own bone (0 = all own bone)


def _ellipsoid(name: str, bone: str, centre: tuple[float, float, float], radii_yxz: tuple[float, float, float], n_lat: int, n_lon: int, style: str, blend: float = 0.0) -> _Part:
    """A y-axis ellipsoid with radii (y, x, z); seam at the back (-z), poles up and down."""
    cx, cy, cz = centre
    ry, rx, rz = radii_yxz
    return _Part(name, bone, (cx, cy + ry, cz), (cx, cy - ry, cz), (1.0, 1.0), (ry, rx, rz), 0.5, n_lat, n_lon, style, blend)


def _parts() -> list[_Part]:
    parts = [
        _ellipsoid("body", "chest", (0.0, -0.06, 0.0), (0.25, 0.22, 0.20), 28, 44, "body", blend=0.24),
        _ellipsoid("head", "head", (0.0, 0.29, 0.02), (0.16, 0.18, 0.16), 22, 36, "head", blend=0.10),
        _Part("tail", "tail", (0.0, -0.14, -0.12), (0.0, 0.02, -0.44), (0.055, 0.022), n_lat=18, n_lon=16, style="limb", blend=0.10),
    ]
    for side, sx in (("l", 1.0), ("r", -1.0)):
        parts += [
            _Part(f"arm_{side}", f"arm_{side}", (0.15 * sx, 0.05, 0.0), (0.44 * sx, 0.12, 0.03), (0.062, 0.048), n_lat=18, n_lon=20, style="limb", blend=0.10),
            _Part(f"leg_{side}", f"leg_{side}", (0.10 * sx, -0.2, 0.0), (0.13 * sx, -0.50, 0.02), (0.075, 0.062), n_lat=16, n_lon=20, style="limb", blend=0.10),
            _ellipsoid(f"foot_{side}", f"leg_{side}", (0.13 * sx, -0.535, 0.06), (0.04, 0.075, 0.105), 10, 16, "foot"),
            # Eyes look forward: axis +z, the pupil sits at the front pole (b = 0).
            _Part(f"eye_{side}", "head", (0.068 * sx, 0.33, 0.195), (0.068 * sx, 0.33, 0.105), (1.0, 1.0), (0.045, 0.045, 0.045), 0.5, 10, 16, "eye"),
            _Part(f"antenna_{side}", f"antenna_{side}", (0.05 * sx, 0.40, 0.0), (0.11 * sx, 0.53, -0.02), (0.016, 0.012), n_lat=10, n_lon=10, style="stalk", blend=0.04),
            _ellipsoid(f"bobble_{side}", f"antenna_{side}", (0.115 * sx, 0.55, -0.02), (0.032, 0.032, 0.032), 10, 14, "bobble"),
        ]
    return parts


def _frame(d: Tensor) -> tuple[Tensor, Tensor]:
    """Two unit vectors orthogonal to unit ``d`` [3]; the seam (a=0) faces -z where it can."""
    ref = torch.tensor([0.0, 0.0, -1.0])
    if abs(float(d @ ref)) > 0.9:
        ref = torch.tensor([0.0, -1.0, 0.0])
    e1 = F.normalize(ref - (ref @ d) * d, dim=0)
    return e1, torch.linalg.cross(d, e1, dim=0)


def _surface(part: _Part, a: Tensor, b: Tensor) -> Tensor:
    """Rest-pose points [..., 3] of ``part`` at parameters a, b (b clamped to [0, 1], a periodic)."""
    b = b.clamp(0.0, 1.0)
    start, end = torch.tensor(part.start), torch.tensor(part.end)
    axis = start - end
    d = F.normalize(axis, dim=0)
    e1, e2 = _frame(d)
    cap = part.cap
    m = ((b - cap) / max(1.0 - 2.0 * cap, 1e-9)).clamp(0.0, 1.0)  # 0 over the start cap, 1 over the end cap
    theta = torch.where(b < cap, 0.5 * math.pi * b / cap, torch.where(b > 1.0 - cap, 0.5 * math.pi * (1.0 + (b - 1.0 + cap) / cap), torch.full_like(b, 0.5 * math.pi)))
    r = part.radius[0] + (part.radius[1] - part.radius[0]) * m
    phi = 2.0 * math.pi * a
    sa, s1, s2 = part.squash
    if part.cap >= 0.5:  # ellipsoid: centred between start and end, squash holds the radii
        centre = 0.5 * (start + end)
    else:
        centre = start + (end - start) * m[..., None]
    local = torch.stack([torch.cos(theta) * sa, torch.sin(theta) * torch.cos(phi) * s1, torch.sin(theta) * torch.sin(phi) * s2], -1) * r[..., None]
    return centre + local[..., 0:1] * d + local[..., 1:2] * e1 + local[..., 2:3] * e2


def _smoothstep(lo: float, hi: float, x: Tensor) -> Tensor:
    """0 at ``lo``, 1 at ``hi``, smooth in between; ``hi < lo`` gives the falling edge."""
    s = ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
    return s * s * (3.0 - 2.0 * s)


def _hsv(h: float, s: float, v: float) -> Tensor:
    """One HSV colour (all in [0, 1]) as RGB [3]."""
    k = torch.tensor([5.0, 3.0, 1.0])
    kk = torch.remainder(k + h * 6.0, 6.0)
    return v - v * s * torch.clamp(torch.minimum(kk, 4.0 - kk), 0.0, 1.0)


class SampleMesh(NamedTuple):
    """The creature's surface at one time.

    ``verts``/``faces`` are the union of closed parts (they overlap where parts
    join); colours are the baked texture sampled at each vertex, for exporters that
    want vertex colours; ``uv``/``texture`` follow :func:`text4d.render.mesh_raster.texture`.
    """

    verts: Tensor  # [V, 3] world
    faces: Tensor  # [F, 3] int64, counter-clockwise seen from outside
    colors: Tensor  # [V, 3] in [0, 1]
    uv: Tensor  # [V, 2]
    texture: Tensor  # [Ht, Wt, 3] in [0, 1]


class Creature:
    """The rest mesh, its texture, skinning weights and loop motion, all fixed by ``seed``."""

    def __init__(self, seed: int = 0, texture_size: int = 1024):
        rng = np.random.default_rng(seed)
        hue = float(rng.uniform())
        self.palette = {
            "base": _hsv(hue, 0.55, 0.85),
            "dark": _hsv(hue + 0.02, 0.65, 0.55),
            "belly": _hsv(hue + 0.08, 0.25, 0.97),
            "accent": _hsv(hue + 0.45, 0.65, 0.9),
            "spot": _hsv(hue + 0.6, 0.5, 0.6),
            "cheek": _hsv(0.97, 0.45, 0.95),
        }
        self.spots = F.normalize(torch.from_numpy(rng.normal(size=(14, 3))).float(), dim=-1)  # spot centres on the body
        # A small phase jitter only: t=0 and t=0.5 stay near the arm and leg extremes for every seed,
        # so "first frame vs middle frame" always shows the full swing.
        self.phase = float(rng.uniform(-0.5, 0.5))
        self.amp = torch.from_numpy(rng.uniform(0.85, 1.15, size=8)).float()
        self.parts = _parts()
        self.texture_size = texture_size
        self._build_mesh()
        self.texture = self._bake_texture()  # [Ht, Wt, 3]

    # ---- geometry -------------------------------------------------------------------------
    def _build_mesh(self) -> None:
        verts, faces, uvs, weld, weights = [], [], [], [], []
        offset = 0
        cell = self.texture_size // ATLAS_CELLS
        for k, part in enumerate(self.parts):
            nl, nu = part.n_lat, part.n_lon
            b, a = torch.meshgrid(torch.linspace(0, 1, nl + 1), torch.linspace(0, 1, nu + 1), indexing="ij")
            p = _surface(part, a, b).reshape(-1, 3)
            idx = torch.arange((nl + 1) * (nu + 1)).reshape(nl + 1, nu + 1)
            q00, q10, q11, q01 = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
            f = torch.cat([torch.stack([q00, q10, q11], -1).reshape(-1, 3), torch.stack([q00, q11, q01], -1).reshape(-1, 3)])
            # Welded ids: the seam column repeats column 0 and each pole row is one point.
            w = idx.clone()
            w[:, -1] = w[:, 0]
            w[0, :] = w[0, 0]
            w[-1, :] = w[-1, 0]
            wf = w.reshape(-1)[f]
            f = f[(wf[:, 0] != wf[:, 1]) & (wf[:, 1] != wf[:, 2]) & (wf[:, 2] != wf[:, 0])]  # drop the zero-area pole fans
            # Orient outwards: the signed volume of a closed surface is positive for outward normals.
            v0, v1, v2 = p[f[:, 0]], p[f[:, 1]], p[f[:, 2]]
            if float((v0 * torch.linalg.cross(v1, v2, dim=-1)).sum()) < 0:
                f = f.flip(-1)
            row, col = divmod(k, ATLAS_CELLS)
            span = cell - 2 * CHART_MARGIN
            uv = torch.stack([col * cell + CHART_MARGIN + a * span, row * cell + CHART_MARGIN + b * span], -1).reshape(-1, 2) / self.texture_size
            verts.append(p)
            faces.append(f + offset)
            uvs.append(uv)
            weld.append(w.reshape(-1) + offset)
            weights.append(self._weights(part, p))
            offset += p.shape[0]
        self.rest_verts = torch.cat(verts)  # [V, 3]
        self.faces = torch.cat(faces)  # [F, 3]
        self.uv = torch.cat(uvs)  # [V, 2]
        self.weld = torch.cat(weld)  # [V]
        self.weights = torch.cat(weights)  # [V, J]

    def _weights(self, part: _Part, p: Tensor) -> Tensor:
        """Skinning weights [P, J]: own bone blended with its parent near the joint."""
        w = torch.zeros(p.shape[0], len(BONES))
        own = BONES.index(part.bone)
        parent = _PARENT[part.bone]
        if part.name == "body":
            # The body is shared by hips (lower half) and chest (upper half): that is the bend.
            s = _smoothstep(-0.14, 0.10, p[:, 1] - _JOINT["chest"][1])
        elif parent is None or part.blend <= 0:
            s = torch.ones(p.shape[0])
        else:
            joint = torch.tensor(_JOINT[part.bone])
            # Towards the tip of a capsule, or the centre of an ellipsoid (the head).
            far = torch.tensor(part.end) if part.cap < 0.5 else 0.5 * (torch.tensor(part.start) + torch.tensor(part.end))
            direction = F.normalize(far - joint, dim=0)
            s = _smoothstep(-0.02, part.blend, (p - joint) @ direction)
        w[:, own] = s
        if parent is not None:
            w[:, BONES.index(parent)] += 1.0 - s
        return w

    def bone_transforms(self, t: Tensor) -> Tensor:
        """Transforms [T, J, 4, 4] from model units (``rest_verts``) to world, per bone, at times ``t`` [T]."""
        t = torch.as_tensor(t, dtype=torch.float32).reshape(-1)
        ph = 2.0 * math.pi * t + self.phase
        a = self.amp
        deg = math.pi / 180.0

        def rot(axis: str, angle: Tensor) -> Tensor:
            c, s = torch.cos(angle), torch.sin(angle)
            m = torch.eye(4).repeat(angle.shape[0], 1, 1)
            i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
            m[:, i, i], m[:, i, j], m[:, j, i], m[:, j, j] = c, -s, s, c
            return m

        def about(joint: str, m: Tensor) -> Tensor:
            tr = torch.eye(4)
            tr[:3, 3] = torch.tensor(_JOINT[joint])
            inv = torch.eye(4)
            inv[:3, 3] = -tr[:3, 3]
            return tr @ m @ inv

        squash = 1.0 + 0.10 * a[0] * torch.sin(2.0 * ph)
        scale = torch.eye(4).repeat(t.shape[0], 1, 1)
        scale[:, 0, 0] = scale[:, 2, 2] = squash.rsqrt()
        scale[:, 1, 1] = squash
        local = {
            "hips": scale @ rot("z", 6 * deg * a[1] * torch.sin(ph)),
            "chest": rot("z", -16 * deg * a[1] * torch.sin(ph)) @ rot("x", 10 * deg * a[2] * torch.sin(ph + 1.0)),
            "head": rot("y", 30 * deg * a[3] * torch.sin(ph + 0.6)) @ rot("z", 12 * deg * torch.sin(ph)),
            "arm_l": rot("z", 42 * deg * a[4] * torch.cos(ph)) @ rot("y", -15 * deg * torch.sin(ph)),
            "arm_r": rot("z", 42 * deg * a[4] * torch.cos(ph)) @ rot("y", 15 * deg * torch.sin(ph)),
            "leg_l": rot("x", 28 * deg * a[5] * torch.cos(ph)),
            "leg_r": rot("x", -28 * deg * a[5] * torch.cos(ph)),
            "tail": rot("y", 40 * deg * a[6] * torch.sin(2.0 * ph)) @ rot("x", 12 * deg * torch.sin(ph)),
            "antenna_l": rot("z", -20 * deg * a[7] * torch.sin(2.0 * ph + 0.5)),
            "antenna_r": rot("z", 20 * deg * a[7] * torch.sin(2.0 * ph + 1.3)),
        }
        # Placement: the model is built in convenient units; scaled and centred, every pose fits a
        # 0.56 ball, so orbit cameras at the DreamGaussian4D default (radius 1.5, fovy 49.1) see all of it.
        place = torch.diag(torch.tensor([_SCALE, _SCALE, _SCALE, 1.0]))
        place[1, 3] = _LIFT
        world: dict[str, Tensor] = {}
        for name in BONES:  # parents come first in BONES
            m = about(name, local[name])
            parent = _PARENT[name]
            world[name] = place @ m if parent is None else world[parent] @ m
        return torch.stack([world[name] for name in BONES], 1)

    def verts_at(self, t: Tensor) -> Tensor:
        """Skinned vertices [T, V, 3] at times ``t`` [T]."""
        mats = self.bone_transforms(t)  # [T, J, 4, 4]
        blended = torch.einsum("vj,tjab->tvab", self.weights, mats[:, :, :3, :])  # [T, V, 3, 4]
        return (blended[..., :3] @ self.rest_verts[None, :, :, None]).squeeze(-1) + blended[..., 3]

    def normals(self, verts: Tensor) -> Tensor:
        """Area-weighted vertex normals [T, V, 3], shared across seams and poles."""
        f = self.faces
        v0, v1, v2 = verts[:, f[:, 0]], verts[:, f[:, 1]], verts[:, f[:, 2]]
        fn = torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)  # [T, F, 3], length = 2 * area
        acc = torch.zeros_like(verts)
        for k in range(3):
            acc.index_add_(1, self.weld[f[:, k]], fn)
        return F.normalize(acc[:, self.weld], dim=-1)

    def mesh_at(self, t: float) -> SampleMesh:
        verts = self.verts_at(torch.tensor([float(t)]))[0]
        colors = texture(self.texture, self.uv[None, None])[0, 0]
        return SampleMesh(verts, self.faces, colors, self.uv, self.texture)

    # ---- appearance -----------------------------------------------------------------------
    def _bake_texture(self) -> Tensor:
        """The atlas [S, S, 3]: each chart holds its part's colour function at rest-pose points."""
        size, cell = self.texture_size, self.texture_size // ATLAS_CELLS
        span = cell - 2 * CHART_MARGIN
        tex = torch.zeros(size, size, 3)
        c = (torch.arange(cell, dtype=torch.float32) + 0.5 - CHART_MARGIN) / span
        b, a = torch.meshgrid(c, c, indexing="ij")  # margins fall outside [0, 1] and wrap/clamp
        a = torch.remainder(a, 1.0)
        b = b.clamp(0.0, 1.0)
        for k, part in enumerate(self.parts):
            row, col = divmod(k, ATLAS_CELLS)
            p = _surface(part, a, b)
            tex[row * cell : (row + 1) * cell, col * cell : (col + 1) * cell] = self._colour(part, p, a, b)
        return tex.clamp(0.0, 1.0)

    def _colour(self, part: _Part, p: Tensor, a: Tensor, b: Tensor) -> Tensor:
        """Albedo [..., 3] of ``part`` at rest points ``p`` [..., 3] with parameters a, b."""
        pal = self.palette
        x, y, z = p.unbind(-1)

        def mix(c0: Tensor, c1: Tensor, s: Tensor) -> Tensor:
            return c0 + (c1 - c0) * s[..., None]

        if part.style in ("body", "head"):
            # Lighter underneath, darker on top: a gradient the eye reads as shape.
            col = mix(pal["dark"], pal["base"], _smoothstep(0.45, -0.2, y))
            if part.style == "body":
                belly = _smoothstep(0.07, 0.15, z) * _smoothstep(0.16, 0.08, x.abs())
                col = mix(col, pal["belly"], belly)
                stripes = _smoothstep(0.2, 0.5, torch.sin(40.0 * y + 6.0 * x.abs())) * _smoothstep(0.0, -0.08, z)
                col = mix(col, pal["dark"], 0.85 * stripes)
                d = F.normalize(p - torch.tensor([0.0, -0.06, 0.0]), dim=-1) @ self.spots.T  # [..., S]
                spot = _smoothstep(0.975, 0.985, d.max(-1).values) * (1.0 - belly) * (1.0 - stripes)
                col = mix(col, pal["spot"], spot)
            else:
                rel = p - torch.tensor([0.0, 0.29, 0.02])
                cheek = _smoothstep(0.045, 0.03, torch.sqrt((rel[..., 0].abs() - 0.11) ** 2 + (rel[..., 1] + 0.02) ** 2)) * (z > 0.05)
                col = mix(col, pal["cheek"], cheek)
                # A smile: a thin arc under the eyes on the front of the face.
                smile = _smoothstep(0.012, 0.004, (rel[..., 1] + 0.06 - 3.0 * rel[..., 0] ** 2).abs()) * (rel[..., 0].abs() < 0.06) * (z > 0.1)
                col = mix(col, torch.tensor([0.25, 0.05, 0.08]), smile)
                crest = _smoothstep(0.4, 0.7, torch.sin(30.0 * z)) * _smoothstep(0.38, 0.42, y)
                col = mix(col, pal["accent"], crest)
                d = F.normalize(rel, dim=-1) @ self.spots.T  # the same spot layout, smaller, on the back of the head
                col = mix(col, pal["spot"], _smoothstep(0.985, 0.99, d.max(-1).values) * (z < -0.02) * (1.0 - crest))
        elif part.style == "limb":
            rings = _smoothstep(0.3, 0.6, torch.sin(2.0 * math.pi * 5.0 * b))
            col = mix(pal["base"], pal["accent"], rings)
            col = mix(col, pal["dark"], _smoothstep(0.8, 0.9, b))  # hands / tail tip
        elif part.style == "foot":
            col = mix(pal["dark"], pal["accent"], _smoothstep(-0.52, -0.56, y))
        elif part.style == "eye":
            col = mix(torch.tensor([0.02, 0.02, 0.03]), pal["accent"], _smoothstep(0.12, 0.15, b))
            col = mix(col, torch.tensor([0.97, 0.97, 0.95]), _smoothstep(0.24, 0.27, b))
            rel = p - 0.5 * (torch.tensor(part.start) + torch.tensor(part.end))
            glint = _smoothstep(0.011, 0.006, torch.sqrt((rel[..., 0] - 0.01) ** 2 + (rel[..., 1] - 0.013) ** 2)) * (rel[..., 2] > 0)
            col = mix(col, torch.ones(3), glint)
        elif part.style == "stalk":
            col = mix(pal["dark"], pal["base"], b)
        else:  # bobble
            col = mix(pal["accent"], pal["belly"], _smoothstep(0.0, 0.6, b))
        return col

    # ---- rendering ------------------------------------------------------------------------
    _LIGHTS = ((0.35, 0.8, 0.55, 0.6), (-0.6, 0.1, -0.5, 0.3))  # (direction xyz, strength); world, fixed
    _AMBIENT = 0.3

    def render(self, cameras: Cameras, times: Tensor, supersample: int = 2, chunk: int = 8) -> tuple[Tensor, Tensor]:
        """Straight RGB [M, H, W, 3] (0 on background) and coverage alpha [M, H, W, 1].

        ``cameras`` has batch [M] and ``times`` is [M]. Lambert + ambient with two
        fixed world lights, per pixel; ``supersample``^2 samples per pixel give
        antialiased edges and alpha. ``chunk`` images are drawn at a time to bound memory.
        """
        if supersample < 1:
            raise ValueError(f"supersample must be >= 1, got {supersample}")
        times = torch.as_tensor(times, dtype=torch.float32).reshape(-1)
        if tuple(cameras.batch_shape) != (times.shape[0],):
            raise ValueError(f"need one time per camera: cameras {tuple(cameras.batch_shape)}, times {tuple(times.shape)}")
        cameras = cameras.to("cpu")
        out = [self._render_chunk(cameras[i : i + chunk], times[i : i + chunk], supersample) for i in range(0, times.shape[0], chunk)]
        return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])

    def _shade(self, albedo: Tensor, normals: Tensor, verts: Tensor, frags: Fragments, cameras: Cameras) -> Tensor:
        """Lit colour [M, H, W, 3] of the visible surface: Lambert + ambient with the fixed world lights.

        ``verts`` [M, V, 3], ``frags`` and ``cameras`` are there for scenes whose
        shading depends on the surface point or the view (a specular highlight).
        """
        shade = torch.full_like(albedo[..., :1], self._AMBIENT)
        for *direction, strength in self._LIGHTS:
            light = F.normalize(torch.tensor(direction), dim=0)
            shade = shade + strength * (normals @ light).clamp_min(0.0)[..., None]
        return albedo * shade

    def _render_chunk(self, cameras: Cameras, times: Tensor, supersample: int) -> tuple[Tensor, Tensor]:
        hi = cameras.resized(cameras.width * supersample, cameras.height * supersample)
        verts = self.verts_at(times)  # [M, V, 3]
        frags = rasterize(verts, self.faces, hi, cull_backfaces=True)
        uv = interpolate(self.uv, frags, self.faces)
        albedo = texture(self.texture, uv)
        n = F.normalize(interpolate(self.normals(verts), frags, self.faces), dim=-1)
        mask = frags.mask
        premult = self._shade(albedo, n, verts, frags, hi).clamp(0.0, 1.0) * mask

        def pool(x: Tensor) -> Tensor:
            return F.avg_pool2d(x.permute(0, 3, 1, 2), supersample).permute(0, 2, 3, 1)

        alpha = pool(mask)
        rgb = torch.where(alpha > 0, pool(premult) / alpha.clamp_min(1e-8), torch.zeros_like(alpha))
        return rgb.clamp(0.0, 1.0), alpha
