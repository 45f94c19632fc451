"""The torch mesh rasteriser against closed forms: coverage, z-buffer, interpolation, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from text4d.render.camera import Cameras
from text4d.render.mesh_raster import interpolate, rasterize, texture

W, H = 40, 32
K = torch.tensor([[50.0, 0.0, 19.3], [0.0, 42.0, 15.7], [0.0, 0.0, 1.0]])


def _identity_camera(batch: int = 1) -> Cameras:
    """Camera at the origin looking down +z (OpenCV: x right, y down), off-centre principal point."""
    return Cameras(torch.eye(4).expand(batch, 4, 4).clone(), K.expand(batch, 3, 3).clone(), W, H)


def _pixel_centres(w: int = W, h: int = H) -> tuple[np.ndarray, np.ndarray]:
    v, u = np.mgrid[0:h, 0:w]
    return u + 0.5, v + 0.5


def _project(verts: torch.Tensor) -> np.ndarray:
    """Pixel coordinates [V, 2] under the identity camera, by hand: u = fx x/z + cx, v = fy y/z + cy."""
    return (verts[:, :2] / verts[:, 2:] * K.diagonal()[:2] + K[:2, 2]).numpy()


def _inside(tri_uv: np.ndarray) -> np.ndarray:
    """Closed-form coverage of a screen triangle [3, 2] at pixel centres: all edge functions agree in sign."""
    x, y = _pixel_centres()
    edges = []
    for i in range(3):
        (x0, y0), (x1, y1) = tri_uv[i], tri_uv[(i + 1) % 3]
        edges.append((x1 - x0) * (y - y0) - (y1 - y0) * (x - x0))
    e = np.stack(edges)
    return np.asarray((e >= 0).all(0) | (e <= 0).all(0))


def test_triangle_covers_closed_form_pixels():
    verts = torch.tensor([[-0.5, -0.4, 2.0], [0.6, -0.25, 2.0], [0.1, 0.5, 2.0]])
    faces = torch.tensor([[0, 1, 2]])
    frags = rasterize(verts, faces, _identity_camera())
    expected = _inside(_project(verts))
    assert expected.sum() > 100
    np.testing.assert_array_equal((frags.face_ids[0] == 0).numpy(), expected)
    assert torch.allclose(frags.depth[0][frags.face_ids[0] == 0], torch.tensor(2.0))
    assert torch.all(frags.depth[0][frags.face_ids[0] < 0] == 0)


def test_front_quad_covers_pixel_rectangle_from_intrinsics():
    cams = Cameras.orbit(0.0, 0.0, 2.0, 49.1, 64, 48)  # front camera at +z, looking at the origin
    x0, x1, y0, y1 = -0.31, 0.22, -0.13, 0.37  # world quad in the z=0 plane, y up
    verts = torch.tensor([[x0, y0, 0.0], [x1, y0, 0.0], [x1, y1, 0.0], [x0, y1, 0.0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])  # counter-clockwise seen from +z
    frags = rasterize(verts, faces, cams, cull_backfaces=True)
    f, cx, cy = cams.Ks[0, 0].item(), cams.Ks[0, 2].item(), cams.Ks[1, 2].item()
    # Camera x = world x, camera y = -world y (image down), depth 2.
    u_lo, u_hi = cx + f * x0 / 2, cx + f * x1 / 2
    v_lo, v_hi = cy - f * y1 / 2, cy - f * y0 / 2
    u, v = _pixel_centres(64, 48)
    expected = (u >= u_lo) & (u <= u_hi) & (v >= v_lo) & (v <= v_hi)
    np.testing.assert_array_equal((frags.face_ids[0] >= 0).numpy(), expected)
    # The same quad wound the other way faces away and is culled; without culling it is drawn.
    assert (rasterize(verts, faces.flip(-1), cams, cull_backfaces=True).face_ids < 0).all()
    assert torch.equal(rasterize(verts, faces.flip(-1), cams).face_ids >= 0, frags.face_ids >= 0)


def test_zbuffer_keeps_nearer_triangle_in_either_order():
    near = torch.tensor([[-0.6, -0.5, 2.0], [0.5, -0.5, 2.0], [0.0, 0.4, 2.0]])
    far = torch.tensor([[-0.3, -0.6, 3.0], [0.8, -0.3, 3.0], [0.2, 0.6, 3.0]]) * torch.tensor([1.5, 1.5, 1.0])
    verts = torch.cat([near, far])
    for faces, near_id in ((torch.tensor([[0, 1, 2], [3, 4, 5]]), 0), (torch.tensor([[3, 4, 5], [0, 1, 2]]), 1)):
        frags = rasterize(verts, faces, _identity_camera())
        in_near, in_far = _inside(_project(near)), _inside(_project(far))
        assert (in_near & in_far).sum() > 50, "the triangles must overlap for this test to mean anything"
        ids = frags.face_ids[0].numpy()
        assert (ids[in_near] == near_id).all()
        assert (ids[in_far & ~in_near] == 1 - near_id).all()
        assert torch.allclose(frags.depth[0][torch.from_numpy(in_near)], torch.tensor(2.0))
        assert torch.allclose(frags.depth[0][torch.from_numpy(in_far & ~in_near)], torch.tensor(3.0))


def test_near_plane_drops_triangles_behind_the_camera():
    verts = torch.tensor([[-0.5, -0.4, 2.0], [0.6, -0.25, 2.0], [0.1, 0.5, -1.0]])
    frags = rasterize(verts, torch.tensor([[0, 1, 2]]), _identity_camera())
    assert (frags.face_ids < 0).all()


def test_interpolation_is_exact_and_perspective_correct():
    # A triangle slanted in depth: screen-linear interpolation would be wrong here.
    verts = torch.tensor([[-0.8, -0.6, 1.5], [0.9, -0.4, 3.5], [0.0, 0.7, 2.5]])
    faces = torch.tensor([[0, 1, 2]])
    frags = rasterize(verts, faces, _identity_camera())
    hit = frags.face_ids[0] >= 0
    assert hit.sum() > 100
    const = interpolate(torch.full((3, 2), 0.25), frags, faces)[0]
    assert torch.allclose(const[hit], torch.tensor(0.25), atol=1e-6)
    assert torch.all(const[~hit] == 0)
    assert torch.allclose(frags.bary[0][hit].sum(-1), torch.tensor(1.0), atol=1e-5)
    # Interpolated 3D positions lie on each pixel's ray at the rasterised depth.
    pts = interpolate(verts, frags, faces)[0][hit]  # [P, 3]
    x, y = _pixel_centres()
    ray_x = (torch.from_numpy(x).float()[hit] - K[0, 2]) / K[0, 0]
    ray_y = (torch.from_numpy(y).float()[hit] - K[1, 2]) / K[1, 1]
    assert torch.allclose(pts[:, 0] / pts[:, 2], ray_x, atol=1e-4)
    assert torch.allclose(pts[:, 1] / pts[:, 2], ray_y, atol=1e-4)
    assert torch.allclose(pts[:, 2], frags.depth[0][hit], rtol=1e-5)


def test_batch_broadcasting_matches_per_camera_calls():
    verts = torch.tensor([[-0.5, -0.4, 0.0], [0.6, -0.25, 0.1], [0.1, 0.5, -0.1], [0.3, 0.3, 0.4]])
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    cams = Cameras.orbit(torch.tensor([0.0, 20.0, -10.0]), torch.tensor([0.0, 30.0, -40.0]), 2.0, 49.1, 32, 24)
    together = rasterize(verts, faces, cams)
    batched = rasterize(verts.expand(3, -1, -1), faces, cams)
    assert together.face_ids.shape == (3, 24, 32)
    for i in range(3):
        single = rasterize(verts, faces, cams[i])
        assert torch.equal(single.face_ids[0], together.face_ids[i])
        assert torch.equal(batched.face_ids[i], together.face_ids[i])
        assert torch.allclose(single.bary[0], together.bary[i])


def test_gradients_reach_texture_and_vertices():
    verts = torch.tensor([[-0.5, -0.4, 2.0], [0.6, -0.25, 2.2], [0.1, 0.5, 1.8]], dtype=torch.float64, requires_grad=True)
    faces = torch.tensor([[0, 1, 2]])
    uv = torch.tensor([[0.1, 0.2], [0.9, 0.3], [0.4, 0.8]], dtype=torch.float64)
    tex = torch.rand(8, 8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    frags = rasterize(verts, faces, _identity_camera())
    rgb = texture(tex, interpolate(uv, frags, faces))
    rgb.square().sum().backward()
    assert tex.grad is not None and tex.grad.abs().sum() > 0
    assert verts.grad is not None and torch.isfinite(verts.grad).all() and verts.grad.abs().sum() > 0

    # With visibility fixed, the barycentric path is exact: compare with finite differences.
    attr = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, -1.0]], dtype=torch.float64)
    weights = torch.rand(1, H, W, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def loss(v: torch.Tensor) -> torch.Tensor:
        return (interpolate(attr, rasterize(v, faces, _identity_camera()), faces) * weights).sum()

    assert torch.autograd.gradcheck(loss, (verts.detach().clone().requires_grad_(),), eps=1e-7, atol=1e-5)


def test_texture_lookup_convention():
    tex = torch.zeros(2, 4, 1)
    tex[0, 3] = 1.0  # first row (v near 0), last column (u near 1)
    uv = torch.tensor([[[[7 / 8, 1 / 4], [1 / 8, 3 / 4]]]])  # texel centres (3, 0) and (0, 1)
    out = texture(tex, uv)
    assert out.shape == (1, 1, 2, 1)
    assert torch.allclose(out.flatten(), torch.tensor([1.0, 0.0]))


def test_bad_inputs_name_the_argument():
    cams = _identity_camera()
    with pytest.raises(ValueError, match="verts"):
        rasterize(torch.zeros(3, 2), torch.tensor([[0, 1, 2]]), cams)
    with pytest.raises(ValueError, match="faces"):
        rasterize(torch.zeros(3, 3), torch.tensor([[0, 1, 3]]), cams)
    with pytest.raises(ValueError, match="near"):
        rasterize(torch.zeros(3, 3), torch.tensor([[0, 1, 2]]), cams, near=0.0)
    with pytest.raises(ValueError, match="broadcast"):
        rasterize(torch.zeros(2, 3, 3), torch.tensor([[0, 1, 2]]), _identity_camera(3))
