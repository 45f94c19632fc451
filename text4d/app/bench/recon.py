"""``text4d bench recon``: dynamic reconstruction of the built-in sample exported as a D-NeRF scene.

Exports the sample (``n_train`` random upper-hemisphere views at random times,
``n_test`` held-out views), reads it back through the D-NeRF reader, fits it,
and reports: seconds of training (evaluation excluded) until test PSNR first
reaches ``target_psnr``, final test PSNR/SSIM, training iterations/s, and
frames/s rendering the trained model (deformation included) at
``render_resolution``². With ``inits`` naming both initialisations it fits
once per init on the same scene, which is how the default init was chosen.

Issue targets (H100): 34 dB-class test PSNR within 2 minutes, >= 300 fps at 800x800.
``tiny=True`` is a CPU smoke size (48 px, 40 views) for tests and laptops.

:func:`compare` fits several configs (deformation models and their recipes)
on one or more procedural scenes (the sample's creature, the whirligig), each
within an optional training-time budget, and writes the JSON and, per scene, a
picture of the test view where the best config beats the first (the baseline)
by the most: baseline | best | ground truth.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from text4d.app.bench.timing import device_name, peak_gib, reset_peak, time_ms, timed_fit
from text4d.app.recon import ReconRun
from text4d.config import CONFIGS, load_config
from text4d.devices import resolve_device
from text4d.errors import ConfigError
from text4d.io.atomic import atomic_path, write_json
from text4d.io.dnerf import read_dnerf
from text4d.metrics import psnr
from text4d.recon import build_recon_stage, export_sample_dnerf
from text4d.views import Views

DEFAULT_CONFIG = CONFIGS / "recon" / "dnerf_fast.yaml"
TINY = {"resolution": 48, "n_train": 40, "n_test": 6, "render_resolution": 96, "eval_every": 20}
TINY_OVERRIDES = ["backend=torch", "init_points=1500", "static_iters=60", "iters=240", "batch_size=4", "densify.start=60", "densify.interval=60", "densify.end=260"]


def run(
    config: str | Path | None = None,
    overrides: list[str] | None = None,
    device: str | None = None,
    target_psnr: float = 30.0,
    eval_every: int = 100,
    resolution: int = 400,
    n_train: int = 100,
    n_test: int = 20,
    render_resolution: int = 800,
    data: str | Path | None = None,
    inits: tuple[str, ...] | None = None,
    tiny: bool = False,
) -> dict:
    """Export (unless ``data`` is given), fit once per init, time it; returns a JSON-able dict."""
    if tiny:
        resolution, n_train, n_test, render_resolution, eval_every = (TINY[k] for k in ("resolution", "n_train", "n_test", "render_resolution", "eval_every"))
        overrides = TINY_OVERRIDES + list(overrides or [])
        device = device or "cpu"
    cfg_path = config or DEFAULT_CONFIG
    base = load_config(ReconRun, cfg_path, overrides)
    dev = resolve_device(device or base.device)
    with tempfile.TemporaryDirectory(prefix="text4d-bench-recon-") as tmp:
        start = time.perf_counter()
        folder = Path(data) if data is not None else export_sample_dnerf(Path(tmp) / "sample", n_train=n_train, n_val=0, n_test=n_test, resolution=resolution)
        export_seconds = time.perf_counter() - start
        scene = read_dnerf(folder, base.data_resolution or None)
    runs = {}
    for init in inits or (base.init,):
        cfg = load_config(ReconRun, cfg_path, list(overrides or []) + [f"init={init}"])
        runs[init] = _fit(cfg, scene, dev, target_psnr, eval_every, render_resolution)
    result = {
        "benchmark": "recon",
        "device": device_name(dev),
        "config": str(cfg_path),
        "overrides": list(overrides or []),
        "scene": {
            "source": str(data) if data is not None else "built-in sample",
            "train_images": len(scene.train),
            "test_images": len(scene.test) if scene.test is not None else 0,
            "resolution": [scene.train.width, scene.train.height],
            "export_seconds": None if data is not None else round(export_seconds, 3),
        },
        "target_psnr": target_psnr,
        **runs[(inits or (base.init,))[0]],
    }
    if len(runs) > 1:
        result["init_comparison"] = {k: {"seconds_to_target": v["seconds_to_target"], "iterations_to_target": v["iterations_to_target"],
                                         "final_psnr": v["final"]["psnr"]} for k, v in runs.items()}
        result["runs"] = runs
    return result


def compare(
    configs: list[str | Path],
    scenes: tuple[str, ...] = ("creature",),
    overrides: list[str] | None = None,
    device: str | None = None,
    target_psnr: float = 30.0,
    eval_every: int = 100,
    resolution: int = 400,
    n_train: int = 100,
    n_test: int = 20,
    render_resolution: int = 800,
    budget_seconds: float | None = None,
    out: str | Path | None = None,
    tiny: bool = False,
) -> dict:
    """Fit every config on every scene (exported at ``resolution``); JSON-able dict, and files under ``out``.

    The first config is the baseline: per scene, the result names the config with
    the best final test PSNR, its gain over the baseline, and (with ``out``) the
    picture ``<scene>_sharpest.png`` of the test view where that gain is largest.
    """
    if tiny:
        resolution, n_train, n_test, render_resolution, eval_every = (TINY[k] for k in ("resolution", "n_train", "n_test", "render_resolution", "eval_every"))
        overrides = TINY_OVERRIDES + list(overrides or [])
        device = device or "cpu"
    cfgs = {Path(c).stem: load_config(ReconRun, c, list(overrides or [])) for c in configs}
    if len(cfgs) != len(configs):
        raise ValueError(f"configs must have distinct file names (they name the runs), got {[str(c) for c in configs]}")
    dev = resolve_device(device or next(iter(cfgs.values())).device)
    result: dict = {"benchmark": "recon-compare", "device": device_name(dev), "configs": [str(c) for c in configs], "overrides": list(overrides or []),
                    "target_psnr": target_psnr, "budget_seconds": budget_seconds, "scenes": {}}
    out_dir = Path(out) if out is not None else None
    for scene_name in scenes:
        with tempfile.TemporaryDirectory(prefix="text4d-bench-recon-") as tmp:
            start = time.perf_counter()
            folder = export_sample_dnerf(Path(tmp) / scene_name, n_train=n_train, n_val=0, n_test=n_test, resolution=resolution, scene=scene_name)
            export_seconds = time.perf_counter() - start
            scene = read_dnerf(folder, next(iter(cfgs.values())).data_resolution or None)
        test = scene.test
        if test is None:
            raise ConfigError(f"n_test={n_test}: the comparison scores held-out views, so it needs at least one")
        runs, renders = {}, {}
        for name, cfg in cfgs.items():
            runs[name], stage = _fit_stage(cfg, scene, dev, target_psnr, eval_every, render_resolution, budget_seconds)
            renders[name] = _test_renders(stage, test)
            del stage
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        baseline = next(iter(runs))
        best = max(runs, key=lambda k: runs[k]["final"]["psnr"])
        entry = {
            "scene": {"train_images": len(scene.train), "test_images": len(test), "resolution": [scene.train.width, scene.train.height],
                      "export_seconds": round(export_seconds, 3)},
            "runs": runs,
            "baseline": baseline,
            "best": best,
            "gain_db": round(runs[best]["final"]["psnr"] - runs[baseline]["final"]["psnr"], 3),
        }
        if out_dir is not None:
            entry["picture"] = str(_sharpest_picture(out_dir / f"{scene_name}_sharpest.png", test, renders[baseline], renders[best]))
        result["scenes"][scene_name] = entry
        if out_dir is not None:  # after each scene, so a run cut short keeps what it measured
            write_json(out_dir / "recon_compare.json", result)
    return result


def _test_renders(stage, test: Views) -> torch.Tensor:
    """The stage's renders of the test views on white, [M, H, W, 3] on the CPU."""
    with torch.no_grad():
        return torch.stack([stage.render(test.cameras[i : i + 1], float(test.times[i])).rgb[0].clamp(0, 1).cpu() for i in range(len(test))])


def _sharpest_picture(path: Path, test: Views, baseline: torch.Tensor, best: torch.Tensor) -> Path:
    """baseline | best | ground truth of the test view where best gains the most PSNR over baseline."""
    gt = test.composite(torch.ones(3)).cpu()
    gain = psnr(best, gt) - psnr(baseline, gt)
    i = int(gain.argmax())
    row = torch.cat([baseline[i], best[i], gt[i]], dim=1)
    import imageio.v3 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, (row * 255.0).round().to(torch.uint8).numpy(), extension=".png")
    return path


def _fit(cfg: ReconRun, scene, dev: torch.device, target_psnr: float, eval_every: int, render_resolution: int) -> dict:
    return _fit_stage(cfg, scene, dev, target_psnr, eval_every, render_resolution)[0]


def _fit_stage(cfg: ReconRun, scene, dev: torch.device, target_psnr: float, eval_every: int, render_resolution: int, budget_seconds: float | None = None) -> tuple[dict, object]:
    stage = build_recon_stage(cfg, dev, scene)
    reset_peak(dev)
    start = {"iteration": 0, "seconds": 0.0, "psnr": round(stage.evaluate()["psnr"], 3)}
    fit = timed_fit(stage, dev, target_psnr, eval_every, budget_seconds)
    final = stage.evaluate()
    test = stage.test
    cam = test.cameras[0:1].resized(render_resolution, render_resolution) if test is not None else stage.reference.cameras[0:1].resized(render_resolution, render_resolution)
    render_ms = time_ms(lambda: stage.render(cam, 0.5), dev)
    return {
        "init": cfg.init,
        "model": cfg.deform.model,
        "iterations": stage.iteration,
        "gaussians": stage.num_gaussians,
        "train_seconds": round(fit.train_seconds, 3),
        "iterations_per_second": round(stage.iteration / max(fit.train_seconds, 1e-9), 2),
        "seconds_to_target": None if fit.seconds_to_target is None else round(fit.seconds_to_target, 3),
        "iterations_to_target": fit.iterations_to_target,
        "final": {k: round(v, 4) for k, v in final.items()},
        "psnr_curve": [start, *fit.curve],
        "render_resolution": render_resolution,
        "render_ms": round(render_ms, 3),
        "render_fps": round(1000.0 / max(render_ms, 1e-9), 1),
        "peak_gib": peak_gib(dev),
    }, stage
