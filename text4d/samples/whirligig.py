"""A second procedural test scene, of another character than the creature: a whirligig.

The creature moves slowly and smoothly, and is mostly body. Settings chosen
on it alone would miss what blurs first in a dynamic reconstruction, so this
scene is made of exactly that:

* a **spinning rotor** (a thin disc, two full turns per loop) with a
  high-frequency wedge-and-ring texture and one odd marker, so every angle
  looks different and a blurred rotation shows at once;
* two **thin pendulum arms** (about 5 px wide at 400 px) with bobs, swinging
  fast (three cycles per loop) in opposite phase from a crossbar;
* a **jelly blob** at the base that squashes, stretches and twists
  (non-rigid, two cycles per loop), with a **specular** (Blinn-Phong)
  highlight that moves with the view as well as the time;
* a thin still post holding it all.

It reuses the creature's machinery (parametric parts, one texture atlas,
the mesh rasteriser, the same lights) and renders through
:meth:`~text4d.samples.creature.Creature.render`, so it exports in the
D-NeRF layout like the sample (``text4d sample export --scene whirligig``).
Every angle is a whole number of cycles over t in [0, 1], so the clip loops.
World frame: y up, everything within 0.56 of the origin.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from text4d.render.camera import Cameras
from text4d.render.mesh_raster import Fragments, interpolate
from text4d.samples.creature import Creature, _ellipsoid, _hsv, _Part, _smoothstep

ROTOR_CENTRE = (0.0, 0.27, 0.0)
PIVOTS = {"arm_l": (0.22, 0.15, 0.0), "arm_r": (-0.22, 0.15, 0.0)}
JELLY_CENTRE = (0.0, -0.36, 0.0)
ARM_LENGTH = 0.30
SPECULAR = (0.55, 40.0)  # strength and Blinn-Phong exponent of the jelly's highlight


def _parts() -> list[_Part]:
    """The whirligig's parts; each is moved by the "bone" of its own name (or "still")."""
    parts = [
        _Part("post", "still", (0.0, 0.25, 0.0), (0.0, -0.30, 0.0), (0.018, 0.018), n_lat=12, n_lon=12, style="post"),
        _Part("crossbar", "still", (0.25, 0.15, 0.0), (-0.25, 0.15, 0.0), (0.014, 0.014), n_lat=16, n_lon=10, style="post"),
        _ellipsoid("rotor", "rotor", ROTOR_CENTRE, (0.022, 0.30, 0.30), 20, 72, "rotor"),
        _ellipsoid("jelly", "jelly", JELLY_CENTRE, (0.13, 0.15, 0.15), 24, 40, "jelly"),
    ]
    for name, (x, y, z) in PIVOTS.items():
        tip = (x, y - ARM_LENGTH, z)
        parts.append(_Part(name, name, (x, y, z), tip, (0.012, 0.012), cap=0.1, n_lat=24, n_lon=10, style="arm"))
        parts.append(_ellipsoid(f"bob_{name[-1]}", name, (x, y - ARM_LENGTH - 0.035, z), (0.04, 0.04, 0.04), 12, 16, "bob"))
    return parts


def _rotation(axis: str, angle: Tensor) -> Tensor:
    """Rotation matrices [T, 3, 3] about a world axis by ``angle`` [T] radians."""
    c, s = torch.cos(angle), torch.sin(angle)
    m = torch.eye(3).repeat(angle.shape[0], 1, 1)
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    m[:, i, i], m[:, i, j], m[:, j, i], m[:, j, j] = c, -s, s, c
    return m


class Whirligig(Creature):
    """The second test scene: same interface as :class:`Creature` (render, mesh_at, verts_at)."""

    def __init__(self, seed: int = 0, texture_size: int = 1024):
        g = torch.Generator().manual_seed(seed)
        hue = float(torch.rand((), generator=g))
        self.palette = {
            "metal": _hsv(hue + 0.55, 0.15, 0.7),
            "rotor_a": _hsv(hue, 0.75, 0.95),
            "rotor_b": _hsv(hue + 0.5, 0.6, 0.35),
            "ring": _hsv(hue + 0.15, 0.2, 0.98),
            "arm_a": _hsv(hue + 0.3, 0.7, 0.85),
            "arm_b": _hsv(hue + 0.3, 0.4, 0.25),
            "jelly": _hsv(hue + 0.75, 0.6, 0.8),
            "spot": _hsv(hue + 0.1, 0.8, 0.95),
        }
        self.spots = F.normalize(torch.randn(10, 3, generator=g), dim=-1)
        self.phase = float(torch.rand((), generator=g) - 0.5)
        self.parts = _parts()
        self.texture_size = texture_size
        self._build_mesh()
        self.texture = self._bake_texture()
        self.part_of = torch.repeat_interleave(torch.arange(len(self.parts)), self.weights.sum(0).round().long())
        self.shininess = (self.part_of == [p.name for p in self.parts].index("jelly")).float()[:, None]  # [V, 1]

    def _weights(self, part: _Part, p: Tensor) -> Tensor:
        """One-hot over parts: every part moves rigidly (or, the jelly, by its own formula)."""
        w = torch.zeros(p.shape[0], len(self.parts))
        w[:, [q.name for q in self.parts].index(part.name)] = 1.0
        return w

    def verts_at(self, t: Tensor) -> Tensor:
        """Vertices [T, V, 3] at times ``t`` [T]."""
        t = torch.as_tensor(t, dtype=torch.float32).reshape(-1)
        ph = 2.0 * math.pi * t + self.phase
        rest = self.rest_verts.expand(t.shape[0], -1, -1).clone()
        out = rest.clone()
        for k, part in enumerate(self.parts):
            sel = self.part_of == k
            p = rest[:, sel]
            if part.bone == "rotor":
                c = torch.tensor(ROTOR_CENTRE)
                out[:, sel] = (p - c) @ _rotation("y", 2.0 * 2.0 * math.pi * t).transpose(1, 2) + c  # two turns per loop
            elif part.bone in PIVOTS:
                c = torch.tensor(PIVOTS[part.bone])
                sign = 1.0 if part.bone == "arm_l" else -1.0
                angle = sign * math.radians(35.0) * torch.sin(3.0 * ph)
                out[:, sel] = (p - c) @ _rotation("z", angle).transpose(1, 2) + c
            elif part.bone == "jelly":
                c = torch.tensor(JELLY_CENTRE)
                rel = p - c
                squash = 1.0 + 0.22 * torch.sin(2.0 * ph)  # stretch up, bulge sideways (volume kept)
                scale = torch.stack([squash.rsqrt(), squash, squash.rsqrt()], -1)[:, None]
                twist = 1.2 * torch.sin(2.0 * ph + 0.7)[:, None] * (rel[..., 1] / 0.13)  # radians, by height
                cos, sin = torch.cos(twist), torch.sin(twist)
                x, y, z = rel.unbind(-1)
                twisted = torch.stack([cos * x + sin * z, y, -sin * x + cos * z], -1)
                out[:, sel] = twisted * scale + c
        return out

    def _colour(self, part: _Part, p: Tensor, a: Tensor, b: Tensor) -> Tensor:
        pal = self.palette

        def mix(c0: Tensor, c1: Tensor, s: Tensor) -> Tensor:
            return c0 + (c1 - c0) * s[..., None]

        if part.style == "rotor":
            rel = p - torch.tensor(ROTOR_CENTRE)
            angle = torch.atan2(rel[..., 2], rel[..., 0])
            radius = rel[..., [0, 2]].norm(dim=-1)
            wedges = _smoothstep(-0.15, 0.15, torch.sin(12.0 * angle))
            col = mix(pal["rotor_a"], pal["rotor_b"], wedges)
            rings = _smoothstep(0.55, 0.8, torch.cos(2.0 * math.pi * radius / 0.05))
            col = mix(col, pal["ring"], rings * (radius > 0.08))
            marker = _smoothstep(0.035, 0.025, (rel[..., [0, 2]] - torch.tensor([0.2, 0.0])).norm(dim=-1))
            return mix(col, torch.tensor([0.05, 0.05, 0.05]), marker)
        if part.style == "arm":
            return mix(pal["arm_a"], pal["arm_b"], _smoothstep(0.2, 0.5, torch.sin(2.0 * math.pi * 8.0 * b)))
        if part.style == "bob":
            return mix(pal["arm_b"], pal["ring"], _smoothstep(0.3, 0.5, b))
        if part.style == "jelly":
            d = F.normalize(p - torch.tensor(JELLY_CENTRE), dim=-1) @ self.spots.T
            return mix(pal["jelly"], pal["spot"], _smoothstep(0.93, 0.95, d.max(-1).values))
        return mix(pal["metal"], pal["metal"] * 0.6, _smoothstep(0.3, 0.6, torch.sin(2.0 * math.pi * 6.0 * b)))

    def _shade(self, albedo: Tensor, normals: Tensor, verts: Tensor, frags: Fragments, cameras: Cameras) -> Tensor:
        """The creature's Lambert shading, plus a white Blinn-Phong highlight on the jelly."""
        lit = super()._shade(albedo, normals, verts, frags, cameras)
        strength, exponent = SPECULAR
        points = interpolate(verts, frags, self.faces)  # [M, H, W, 3] world
        shiny = interpolate(self.shininess, frags, self.faces)
        view = F.normalize(cameras.centers.reshape(-1, 1, 1, 3) - points, dim=-1)
        highlight = torch.zeros_like(shiny)
        for *direction, light_strength in self._LIGHTS:
            half = F.normalize(F.normalize(torch.tensor(direction), dim=0) + view, dim=-1)
            highlight = highlight + light_strength * (normals * half).sum(-1, keepdim=True).clamp_min(0.0).pow(exponent)
        return lit + strength * shiny * highlight
