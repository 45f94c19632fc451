"""Mesh export end to end on Gaussians laid on the built-in sample's animated surface.

What this proves: for Gaussians that form a surface (:class:`text4d.mesh.surface.SurfaceGaussians`),
extraction + shared-topology following + baking reproduce the Gaussians' silhouettes
(IoU >= 0.9 at several frames and views) and colours, and the OBJ / GLB writers
produce what Blender's Stop-motion-OBJ add-on and glTF 2.0 readers expect. It does
not prove that a *trained* stage is surface-like (``text4d bench export`` measures that).
"""

from __future__ import annotations

import dataclasses
import logging
import re

import numpy as np
import pytest
import torch

from text4d.errors import ConfigError, InputError
from text4d.export.mesh import export_glb, export_obj_sequence
from text4d.mesh.compare import compare
from text4d.mesh.obj import sequence_files
from text4d.mesh.sequence import (
    MeshConfig,
    MeshSequence,
    build_sequence,
    gaussian_renderer,
    glb_data,
    write_obj_files,
)
from text4d.mesh.surface import SurfaceGaussians
from text4d.render.camera import Cameras

log = logging.getLogger(__name__)
pytest.importorskip("xatlas")
pytest.importorskip("fast_simplification")

TINY = MeshConfig(resolution=64, texture=128, bake_resolution=64, bake_views=6, bake_frames=1, max_faces=4000)


@pytest.fixture(scope="module")
def source() -> SurfaceGaussians:
    return SurfaceGaussians(num_frames=3, faces=1500)


@pytest.fixture(scope="module")
def seq(source) -> MeshSequence:
    return build_sequence(source, dataclasses.replace(TINY))


def test_silhouettes_and_colours_match_the_gaussians(source, seq):
    assert seq.shared and len(seq.frames) == 3
    assert all(f.faces.shape[0] > 1000 and f.verts.shape == seq.frames[0].verts.shape for f in seq.frames)
    cams = Cameras.orbit(torch.tensor([0.0, 25.0, -15.0]), torch.tensor([20.0, 140.0, 250.0]), 2.0, 49.1, 96, 96)
    q = compare(seq, gaussian_renderer(source), cams)  # frames 0, 1, 2 (t = 0, 0.5, 1) x 3 views
    log.info("mesh vs Gaussians: %s", q)
    print(f"\nmesh vs Gaussians (shared topology): IoU {q['iou']:.3f} (min {q['iou_min']:.3f}), textured PSNR {q['psnr']:.2f} dB")
    assert q["iou_min"] >= 0.9
    assert q["psnr"] >= 20.0


def test_obj_sequence_is_named_numbered_and_textured(seq, tmp_path):
    out = write_obj_files(seq, tmp_path, "creature")
    objs = sequence_files(out, "creature")
    assert [p.name for p in objs] == ["creature_000.obj", "creature_001.obj", "creature_002.obj"]
    for i, obj in enumerate(objs):
        text = obj.read_text()
        assert f"mtllib creature_{i:03d}.mtl" in text
        assert f"map_Kd creature_{i:03d}.png" in (out / f"creature_{i:03d}.mtl").read_text()
        assert (out / f"creature_{i:03d}.png").stat().st_size > 0
        v = np.array([line.split()[1:] for line in text.splitlines() if line.startswith("v ")], dtype=np.float64)
        vt = np.array([line.split()[1:] for line in text.splitlines() if line.startswith("vt ")], dtype=np.float64)
        faces = [line for line in text.splitlines() if line.startswith("f ")]
        assert np.allclose(v, seq.frames[i].verts.numpy(), atol=1e-5)  # same world frame and scale every frame
        assert np.allclose(vt[:, 1], 1.0 - seq.frames[i].uv[:, 1].numpy(), atol=1e-5)  # OBJ's v counts from the bottom
        assert len(faces) == seq.frames[i].faces.shape[0]
        assert re.fullmatch(r"f \d+/\d+/\d+ \d+/\d+/\d+ \d+/\d+/\d+", faces[0])
    import trimesh

    loaded = trimesh.load(objs[1], force="mesh", process=False)
    assert len(loaded.faces) == seq.frames[1].faces.shape[0]


def test_glb_reloads_with_one_morph_target_per_frame(seq, tmp_path):
    pygltflib = pytest.importorskip("pygltflib")
    path = tmp_path / "anim.glb"
    path.write_bytes(glb_data(seq, fps=10.0))
    gltf = pygltflib.GLTF2().load(str(path))
    prim = gltf.meshes[0].primitives[0]
    assert len(prim.targets) == len(seq.frames) - 1
    sampler = gltf.animations[0].samplers[0]
    times = gltf.accessors[sampler.input]
    assert times.count == len(seq.frames) and times.max == [pytest.approx(0.2)]
    assert gltf.accessors[sampler.output].count == len(seq.frames) * (len(seq.frames) - 1)
    assert gltf.accessors[prim.attributes.POSITION].count == seq.frames[0].verts.shape[0]
    import trimesh

    scene = trimesh.load(path)
    assert sum(len(g.faces) for g in scene.geometry.values()) == seq.frames[0].faces.shape[0]


def test_glb_passes_the_khronos_validator(seq, tmp_path, gltf_validator):
    path = tmp_path / "anim.glb"
    path.write_bytes(glb_data(seq))
    summary = gltf_validator(path)
    assert "errors=0" in summary and "animations=1" in summary and "morph=true" in summary, summary


def test_unwritable_destination_fails_before_any_work(source, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(InputError, match="cannot write"):
        export_obj_sequence(source, blocker / "meshes", dataclasses.replace(TINY))
    with pytest.raises(InputError, match="cannot write"):
        export_glb(source, blocker / "a.glb", dataclasses.replace(TINY))


def test_empty_density_leaves_no_partial_files(source, tmp_path):
    with pytest.raises(InputError, match="never reaches the mesh threshold"):
        export_obj_sequence(source, tmp_path / "meshes", dataclasses.replace(TINY, level=1e6))
    with pytest.raises(InputError, match="never reaches the mesh threshold"):
        export_glb(source, tmp_path / "a.glb", dataclasses.replace(TINY, level=1e6))
    assert list(tmp_path.iterdir()) == []  # neither the outputs nor hidden temporaries


def test_glb_needs_shared_topology(seq):
    per_frame = MeshSequence(seq.frames, seq.indices, seq.times, shared=False)
    with pytest.raises(ConfigError, match="topology=shared"):
        glb_data(per_frame)


def test_session_offers_mesh_exports():
    from text4d.export import ExportSettings, exporters

    assert {"obj-seq", "glb"} <= set(exporters(ExportSettings(), has_ground_truth=False))


def test_bench_export_times_both_files_and_scores_the_meshes():
    """`text4d bench export` on the creature's surface at its CPU size: every phase timed, sizes and mesh quality reported."""
    from text4d.app.bench.export import run

    result = run(device="cpu", source="surface", frames=3, resolution=32, texture=64, repeats=1, tiny=True)
    assert result["frames"] == 3 and result["faces"] > 0 and result["vertices"] > 0
    assert result["seconds_obj_seq_plus_glb"] > 0 and result["phase_seconds_fastest"] and result["glb_mb"] > 0 and result["obj_folder_mb"] > 0
    for scores in (result["quality_shared"], result["quality_per_frame_topology"]):
        assert scores and all(np.isfinite(v) for v in scores.values())
