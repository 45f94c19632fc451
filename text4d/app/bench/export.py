"""``text4d bench export``: seconds for a 14-frame OBJ sequence + GLB at 128^3 (target on an H100: <= 10 s).

Sources of Gaussians:
  * ``fit`` (default): the dynamic stage fitted to the built-in sample with
    ``configs/dynamic/sample.yaml`` (fit time reported, not counted);
  * ``surface``: Gaussians laid on the sample's animated surface
    (:class:`text4d.mesh.surface.SurfaceGaussians`), no training: the CPU smoke mode;
  * ``run_dir``: a run folder's latest checkpoint.

The timed export is :func:`text4d.mesh.export.export_meshes` (one extraction
feeding both writers), after one untimed warm-up export (CUDA context, kernel
caches). Quality: silhouette IoU and PSNR of the textured meshes against the
Gaussians' renders at a few frames and held-out views, for the shared topology
and (``compare_topologies``) for marching cubes per frame.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from text4d.app.bench.timing import device_name, peak_gib, reset_peak
from text4d.app.sample import SampleRun, build_sample_stage
from text4d.config import CONFIGS, load_config
from text4d.devices import resolve_device, synchronize
from text4d.export.mesh import export_meshes
from text4d.mesh.compare import compare
from text4d.mesh.sequence import MeshConfig, build_sequence, gaussian_renderer
from text4d.mesh.surface import SurfaceGaussians
from text4d.render.camera import DEFAULT_FOVY, Cameras

SAMPLE_CONFIG = CONFIGS / "dynamic" / "sample.yaml"


def source_stage(source: str, run_dir: str | None, device: torch.device, frames: int, fit_overrides: list[str] | None, tiny: bool):
    """The Gaussians an export bench times: a run's checkpoint, the sample fitted here, or the sample's surface (see the module docstring)."""
    if run_dir is not None:
        from text4d.app.kinds import open_run

        return open_run(run_dir, [f"device={device}"]).session.stage, {"source": "run", "run_dir": str(run_dir)}
    if source == "surface":
        return SurfaceGaussians(num_frames=frames, faces=1500 if tiny else 0, device=device), {"source": "surface"}
    if source != "fit":
        raise ValueError(f"source must be 'fit' or 'surface', got {source!r}")
    tiny_fit = ["iters=60", "static_iters=20", "ref_size=64", "sample.resolution=64", "init_points=1000"] if tiny else []
    overrides = [f"sample.num_frames={frames}", f"device={device}", *tiny_fit, *(fit_overrides or [])]
    cfg = load_config(SampleRun, SAMPLE_CONFIG, overrides)
    stage = build_sample_stage(cfg, device)
    synchronize(device)
    start = time.perf_counter()
    while stage.iteration < stage.iters:
        stage.step()
    synchronize(device)
    return stage, {"source": "fit", "fit_iterations": stage.iteration, "fit_seconds": round(time.perf_counter() - start, 2),
                   "fit_heldout": {k: round(v, 3) for k, v in stage.evaluate().items()}}


def run(
    device: str | None = None,
    source: str = "fit",
    run_dir: str | None = None,
    frames: int = 14,
    resolution: int = 128,
    texture: int = 1024,
    repeats: int = 3,
    tiny: bool = False,
    compare_topologies: bool = True,
    overrides: list[str] | None = None,
    fit_overrides: list[str] | None = None,
) -> dict:
    """Time OBJ sequence + GLB exports; ``tiny`` shrinks everything for a CPU smoke run. Returns a JSON-able dict."""
    dev = resolve_device(device or "auto")
    stage, info = source_stage(source, run_dir, dev, frames, fit_overrides, tiny)
    tiny_mesh = ["bake_resolution=64", "bake_views=6", "bake_frames=1", "max_faces=5000"] if tiny else []
    mesh_overrides = [f"resolution={resolution}", f"texture={texture}", *tiny_mesh, *(overrides or [])]
    cfg = load_config(MeshConfig, None, mesh_overrides)
    seconds: list[float] = []
    timings: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="text4d-bench-export-") as tmp_name:
        tmp = Path(tmp_name)
        export_meshes(stage, tmp / "warmup", tmp / "warmup.glb", cfg)
        reset_peak(dev)
        for i in range(max(1, repeats)):  # at least once: seq is the last export
            synchronize(dev)
            start = time.perf_counter()
            seq = export_meshes(stage, tmp / f"obj{i}", tmp / f"out{i}.glb", cfg)
            synchronize(dev)
            seconds.append(time.perf_counter() - start)
            timings.append(seq.timings)
        sizes = {"obj_folder_mb": round(sum(p.stat().st_size for p in (tmp / "obj0").iterdir()) / 2**20, 2), "glb_mb": round((tmp / "out0.glb").stat().st_size / 2**20, 2)}
    total = statistics.median(seconds)
    best = timings[seconds.index(min(seconds))]
    result = {
        "benchmark": "export",
        "device": device_name(dev),
        **info,
        "gaussians": int(stage.deformed(torch.zeros(1, device=dev)).means.shape[-2]),
        "frames": len(seq.frames),
        "resolution": cfg.resolution,
        "texture": cfg.texture,
        "faces": int(seq.frames[0].faces.shape[0]),
        "vertices": int(seq.frames[0].verts.shape[0]),
        "seconds_obj_seq_plus_glb": round(total, 3),
        "seconds_all_repeats": [round(s, 3) for s in seconds],
        "target_seconds": 10.0,
        "meets_target": total <= 10.0,
        "phase_seconds_fastest": {k: round(v, 3) for k, v in best.items()},
        **sizes,
        "peak_gib": peak_gib(dev),
    }
    cams = Cameras.orbit(torch.tensor([20.0, -10.0, 0.0, 30.0]), torch.tensor([30.0, 150.0, 260.0, 90.0]), 2.0, DEFAULT_FOVY, 128 if tiny else 256, 128 if tiny else 256)
    checked = sorted({0, len(seq.frames) // 2, len(seq.frames) - 1})
    render_fn = gaussian_renderer(stage)
    result["quality_shared"] = {k: round(v, 4) for k, v in compare(seq, render_fn, cams, checked).items()}
    if compare_topologies:
        per_frame = build_sequence(stage, load_config(MeshConfig, None, mesh_overrides + ["topology=per-frame"]), [seq.indices[i] for i in checked])
        result["quality_per_frame_topology"] = {k: round(v, 4) for k, v in compare(per_frame, render_fn, cams).items()}
        result["seconds_per_frame_topology_3_frames"] = round(sum(per_frame.timings.values()), 3)
    return result
