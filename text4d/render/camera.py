"""The one place for camera conventions.

World frame: right-handed, **y up**, the object at the origin. The front view
(elevation 0, azimuth 0) looks from +z towards the origin.

Orbit angles, in degrees:
  * ``elevation`` > 0 puts the camera *above* the object. (DreamGaussian's
    ``orbit_camera`` uses the opposite sign: ``dg_elevation = -elevation``;
    convert with :func:`from_dreamgaussian_elevation` at that boundary only.)
  * ``azimuth`` turns the camera about +y; azimuth 90 puts it on +x.
  * position = radius * (cos(el) sin(az), sin(el), cos(el) cos(az)).

Camera axes: matrices here are **OpenCV** (x right, y down, z forward), which is
what gsplat, diff-gaussian-rasterization and viser's camera frames use. Blender,
NeRF/D-NeRF ``transform_matrix`` and three.js are **OpenGL** (x right, y up,
z backward); convert with :func:`opengl_to_opencv` / :func:`opencv_to_opengl`.
Blender's *world* is z up: :func:`blender_to_world` / :func:`world_to_blender`
turn camera-to-world matrices between it and ours (x stays, Blender z is our
y, Blender y is our -z: Blender's front view, from -y, is ours, from +z).

Pixels: pixel (u, v) covers [u, u+1) x [v, v+1); its centre is (u+0.5, v+0.5).
The principal point of our cameras is the image centre (W/2, H/2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor

# Vertical field of view in degrees: DreamGaussian's and Zero123's cameras. The sample, the studios, the
# exports and the stage configs use it unless told otherwise.
DEFAULT_FOVY = 49.1
# The studios' and scene recordings' first view of an object: elevation, azimuth (degrees), distance.
FIRST_VIEW = (15.0, 20.0, 2.5)

_GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))
# Blender world (z up) -> ours (y up), acting on homogeneous points.
_BLENDER_TO_WORLD = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])


Angle = TypeVar("Angle", float, Tensor)  # degrees, one or many


def from_dreamgaussian_elevation(dg_elevation: Angle) -> Angle:
    """DreamGaussian's elevation (negative = above) to ours (positive = above)."""
    return -dg_elevation


def opengl_to_opencv(c2w: Tensor) -> Tensor:
    """Camera-to-world in OpenGL axes [..., 4, 4] -> OpenCV axes (flip y and z)."""
    return c2w @ _GL_TO_CV.to(c2w)


def opencv_to_opengl(c2w: Tensor) -> Tensor:
    """Camera-to-world in OpenCV axes [..., 4, 4] -> OpenGL axes (its own inverse)."""
    return c2w @ _GL_TO_CV.to(c2w)


def blender_to_world(c2w: Tensor) -> Tensor:
    """Camera-to-world [..., 4, 4] in Blender's z-up world -> our y-up world (camera axes unchanged)."""
    return _BLENDER_TO_WORLD.to(c2w) @ c2w


def world_to_blender(c2w: Tensor) -> Tensor:
    """Inverse of :func:`blender_to_world` (the rotation's inverse is its transpose)."""
    return _BLENDER_TO_WORLD.T.to(c2w) @ c2w


def look_at(eye: Tensor, target: Tensor | None = None, up: Tensor | None = None) -> Tensor:
    """OpenCV camera-to-world matrices [..., 4, 4] for cameras at ``eye`` [..., 3].

    ``up`` defaults to world +y; a camera looking straight down (or up) falls back
    to +z as its up hint so the matrix stays well defined.
    """
    eye = torch.as_tensor(eye, dtype=torch.float32)
    target = torch.zeros_like(eye) if target is None else torch.as_tensor(target).to(eye).expand_as(eye)
    up = eye.new_tensor([0.0, 1.0, 0.0]) if up is None else torch.as_tensor(up).to(eye)
    forward = torch.nn.functional.normalize(target - eye, dim=-1)  # +z of the camera
    up = up.expand_as(forward)
    degenerate = torch.linalg.cross(forward, up, dim=-1).norm(dim=-1, keepdim=True) < 1e-6
    up = torch.where(degenerate, eye.new_tensor([0.0, 0.0, 1.0]).expand_as(up), up)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, up, dim=-1), dim=-1)  # +x
    down = torch.linalg.cross(forward, right, dim=-1)  # +y (image down)
    c2w = torch.zeros(*eye.shape[:-1], 4, 4, dtype=eye.dtype, device=eye.device)
    c2w[..., :3, 0] = right
    c2w[..., :3, 1] = down
    c2w[..., :3, 2] = forward
    c2w[..., :3, 3] = eye
    c2w[..., 3, 3] = 1.0
    return c2w


def orbit_position(elevation: Tensor | float, azimuth: Tensor | float, radius: Tensor | float) -> Tensor:
    """World position [..., 3] of an orbit camera (angles in degrees)."""
    el = torch.deg2rad(torch.as_tensor(elevation, dtype=torch.float32))
    az = torch.deg2rad(torch.as_tensor(azimuth, dtype=torch.float32))
    r = torch.as_tensor(radius, dtype=torch.float32)
    el, az, r = torch.broadcast_tensors(el, az, r)
    return torch.stack([r * torch.cos(el) * torch.sin(az), r * torch.sin(el), r * torch.cos(el) * torch.cos(az)], -1)


def orbit_c2w(elevation: Tensor | float, azimuth: Tensor | float, radius: Tensor | float) -> Tensor:
    """OpenCV camera-to-world [..., 4, 4] of orbit cameras looking at the origin."""
    return look_at(orbit_position(elevation, azimuth, radius))


def focal_from_fovy(fovy_deg: float, height: int) -> float:
    return 0.5 * height / math.tan(0.5 * math.radians(fovy_deg))


def intrinsics(fovy_deg: float, width: int, height: int) -> Tensor:
    """Pinhole K [3, 3] with square pixels and the principal point at the image centre."""
    f = focal_from_fovy(fovy_deg, height)
    return torch.tensor([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


@dataclass
class Cameras:
    """A batch of pinhole cameras sharing one image size.

    Attributes:
        viewmats: world-to-camera, OpenCV axes.  # [..., 4, 4]
        Ks: intrinsics in pixels.  # [..., 3, 3]
        width, height: image size in pixels.
    """

    viewmats: Tensor
    Ks: Tensor
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.viewmats.shape[-2:] != (4, 4) or self.Ks.shape[-2:] != (3, 3):
            raise ValueError(f"viewmats must be [...,4,4] and Ks [...,3,3], got {tuple(self.viewmats.shape)} and {tuple(self.Ks.shape)}")
        if self.viewmats.shape[:-2] != self.Ks.shape[:-2]:
            raise ValueError(f"viewmats batch {tuple(self.viewmats.shape[:-2])} != Ks batch {tuple(self.Ks.shape[:-2])}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")

    @property
    def batch_shape(self) -> torch.Size:
        return self.viewmats.shape[:-2]

    @property
    def device(self) -> torch.device:
        return self.viewmats.device

    @property
    def c2w(self) -> Tensor:
        """OpenCV camera-to-world [..., 4, 4]."""
        return torch.linalg.inv(self.viewmats)

    @property
    def centers(self) -> Tensor:
        """Camera positions in world space [..., 3]."""
        return self.c2w[..., :3, 3]

    def to(self, device: torch.device | str) -> "Cameras":
        return Cameras(self.viewmats.to(device), self.Ks.to(device), self.width, self.height)

    def __getitem__(self, index) -> "Cameras":
        return Cameras(self.viewmats[index], self.Ks[index], self.width, self.height)

    def resized(self, width: int, height: int) -> "Cameras":
        """Same cameras at another resolution (intrinsics scaled, field of view kept)."""
        scale = torch.tensor([width / self.width, height / self.height, 1.0], device=self.Ks.device)
        return Cameras(self.viewmats, self.Ks * scale[:, None], width, height)

    def reshape(self, *shape: int) -> "Cameras":
        return Cameras(self.viewmats.reshape(*shape, 4, 4), self.Ks.reshape(*shape, 3, 3), self.width, self.height)

    @staticmethod
    def from_c2w(c2w: Tensor, K: Tensor, width: int, height: int) -> "Cameras":
        """From OpenCV camera-to-world matrices [..., 4, 4] and K [3, 3] or [..., 3, 3]."""
        viewmats = torch.linalg.inv(c2w)
        return Cameras(viewmats, K.to(c2w).expand(*c2w.shape[:-2], 3, 3).clone(), width, height)

    @staticmethod
    def orbit(
        elevation: Tensor | float,
        azimuth: Tensor | float,
        radius: Tensor | float,
        fovy: float,
        width: int,
        height: int,
    ) -> "Cameras":
        """Orbit cameras (degrees; see module docstring) looking at the origin."""
        return Cameras.from_c2w(orbit_c2w(elevation, azimuth, radius), intrinsics(fovy, width, height), width, height)

    @staticmethod
    def cat(cams: list["Cameras"]) -> "Cameras":
        first = cams[0]
        return Cameras(torch.cat([c.viewmats for c in cams]), torch.cat([c.Ks for c in cams]), first.width, first.height)


@dataclass(frozen=True)
class Orbit:
    """How a turntable looks at the object: orbit videos, scene recordings, mesh bakes, the studios' first view.

    One preset for everything made from a generated object (it fits the sample and DreamGaussian's
    models, which sit in the unit ball); a posed capture gets its own from its cameras
    (:meth:`from_cameras`) so an orbit frames the scene as the captures did.
    """

    elevation: float = 10.0
    radius: float = 2.0
    fovy: float = DEFAULT_FOVY

    @staticmethod
    def from_cameras(cameras: Cameras, elevation: float = 20.0) -> Orbit:
        """An orbit at the cameras' mean distance from the origin with their field of view."""
        K = cameras.Ks.reshape(-1, 3, 3)[0]
        fovy = math.degrees(2.0 * math.atan(0.5 * cameras.height / float(K[1, 1])))
        return Orbit(elevation, float(cameras.centers.norm(dim=-1).mean()), fovy)

    def cameras(self, azimuth: Tensor | float, resolution: int) -> Cameras:
        """Square cameras on this orbit at ``azimuth`` (degrees), batch shape of ``azimuth`` (at least [1])."""
        azimuth = torch.as_tensor(azimuth, dtype=torch.float32).reshape(-1)
        return Cameras.orbit(torch.full_like(azimuth, self.elevation), azimuth, self.radius, self.fovy, resolution, resolution)


def viewing_distance(cameras: Cameras | None) -> float:
    """How far a studio starts from the object: as far as the held-out ``cameras`` are on average, else :data:`FIRST_VIEW`'s."""
    return float(cameras.centers.norm(dim=-1).mean()) if cameras is not None else FIRST_VIEW[2]

