"""One animated binary glTF 2.0 (``.glb``) for a mesh sequence that shares one topology.

Scheme: **morph targets**. The primitive holds frame 0 (positions, normals, UVs,
indices, the baked texture as an embedded PNG); frame k > 0 is morph target k-1
holding the position and normal *deltas* from frame 0; one animation drives the
node's morph weights with LINEAR interpolation over keyframes at ``i / fps``,
where frame k's keyframe weights are one-hot on target k (all zero at frame 0).

Why this and not one node per frame with step visibility (scale 0/1): it is
glTF's native way to animate a deforming surface, so Blender imports it as
shape keys with an action and every glTF viewer plays it; LINEAR weights blend
neighbouring frames, so playback is smooth at any frame rate instead of
stuttering at the clip's rate; UVs, indices and the texture are stored once,
not T times; and at most two weights are non-zero at any time, which stays
within the 8 active influences older renderers (three.js < r133) honour.
It needs every frame to share vertices and faces, which the shared-topology
extraction (:mod:`text4d.mesh.follow`) guarantees.

Written with our own container writer (:mod:`text4d.io.glb`), so alignment, accessor bounds
and normal lengths, which the Khronos validator checks, are ours to control.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from text4d.io.glb import ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER, GlbBuilder

LINEAR, LINEAR_MIPMAP_LINEAR, CLAMP_TO_EDGE = 9729, 9987, 33071


def glb_bytes(
    verts: np.ndarray,  # [T, V, 3] float32
    normals: np.ndarray,  # [T, V, 3] unit
    uv: np.ndarray,  # [V, 2], v from the image's first row (glTF's convention)
    faces: np.ndarray,  # [F, 3], counter-clockwise from outside
    png: bytes,  # the base-colour texture
    fps: float = 12.0,
    name: str = "text4d",
) -> bytes:
    """The ``.glb`` file's bytes (see the module docstring for the layout)."""
    t = verts.shape[0]
    b = GlbBuilder()
    base_v = verts[0].astype(np.float32)
    base_n = normals[0].astype(np.float32)
    base_n /= np.linalg.norm(base_n, axis=-1, keepdims=True).clip(1e-12)
    attributes = {
        "POSITION": b.accessor(base_v, "VEC3", ARRAY_BUFFER, bounds=True),
        "NORMAL": b.accessor(base_n, "VEC3", ARRAY_BUFFER),
        "TEXCOORD_0": b.accessor(uv.astype(np.float32), "VEC2", ARRAY_BUFFER),
    }
    indices = b.accessor(faces.astype(np.uint32).reshape(-1), "SCALAR", ELEMENT_ARRAY_BUFFER, bounds=True)
    targets = []
    for k in range(1, t):
        n_k = normals[k].astype(np.float32)
        n_k = n_k / np.linalg.norm(n_k, axis=-1, keepdims=True).clip(1e-12)
        targets.append({
            "POSITION": b.accessor((verts[k] - verts[0]).astype(np.float32), "VEC3", ARRAY_BUFFER, bounds=True),
            "NORMAL": b.accessor(n_k - base_n, "VEC3", ARRAY_BUFFER),
        })  # fmt: skip
    primitive: dict[str, Any] = {"attributes": attributes, "indices": indices, "material": 0, "mode": 4}
    mesh: dict[str, Any] = {"name": name, "primitives": [primitive]}
    gltf: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": "text4d"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"name": name, "mesh": 0}],
        "meshes": [mesh],
        "materials": [{"name": name, "pbrMetallicRoughness": {"baseColorTexture": {"index": 0}, "metallicFactor": 0.0, "roughnessFactor": 1.0}}],
        "textures": [{"sampler": 0, "source": 0}],
        "samplers": [{"magFilter": LINEAR, "minFilter": LINEAR_MIPMAP_LINEAR, "wrapS": CLAMP_TO_EDGE, "wrapT": CLAMP_TO_EDGE}],
        "images": [{"bufferView": b.view(png), "mimeType": "image/png"}],
    }
    if targets:
        primitive["targets"] = targets
        mesh["weights"] = [0.0] * len(targets)
        mesh["extras"] = {"targetNames": [f"frame_{k:03d}" for k in range(1, t)]}
        times = np.arange(t, dtype=np.float32) / float(fps)
        weights = np.zeros((t, t - 1), dtype=np.float32)
        weights[np.arange(1, t), np.arange(t - 1)] = 1.0
        gltf["animations"] = [{
            "name": "frames",
            "samplers": [{"input": b.accessor(times, "SCALAR", bounds=True), "output": b.accessor(weights.reshape(-1), "SCALAR"), "interpolation": "LINEAR"}],
            "channels": [{"sampler": 0, "target": {"node": 0, "path": "weights"}}],
        }]  # fmt: skip
    return b.glb(gltf)
