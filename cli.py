"""text4d command line: parse -> config -> text4d API. No logic lives here."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer

from text4d.app.video import motion_app, video_app
from text4d.errors import Text4DError
from text4d.extras import user_error

app = typer.Typer(help="text4d: text / image / video -> animated 3D Gaussians, with a live studio.", no_args_is_help=True, add_completion=False)
bench_app = typer.Typer(help="Benchmarks that print JSON.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(motion_app, name="motion")
app.add_typer(video_app, name="video")
sample_app = typer.Typer(help="The built-in animated sample.", no_args_is_help=True)
app.add_typer(sample_app, name="sample")

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config file; key=value overrides follow the command.")
OverridesArg = typer.Argument(None, help="key=value config overrides (OmegaConf dotlist)", show_default=False)
FullRunOpt = typer.Option(False, "--full", help="Run and time every iteration of the config instead of extrapolating from measured ones.")
UI_HELP = "viser (web studio), dpg (desktop window), viser,dpg (both on one session) or none (headless)."
UiOpt = typer.Option("viser", "--ui", help=UI_HELP)
HeadlessUiOpt = typer.Option("none", "--ui", help=UI_HELP)  # commands that run headless unless asked
HostOpt = typer.Option(None, "--host", help="Viewer host (default 127.0.0.1).")
PortOpt = typer.Option(None, "--port", help="Viewer port (default 8080; a busy port moves to the next free one).")
TinyZero123Opt = typer.Option(None, "--tiny/--full-size",
                              help="Tiny random Zero123 (CPU smoke test) instead of the Stable-Zero123 size; default: tiny when the bench runs on the CPU.")
StepsOpt = typer.Option(None, "--steps", help="Train this many iterations, then pause (headless: then export and exit).")


@app.command()
def fit(
    sample: bool = typer.Option(False, "--sample", help="Fit the built-in animated sample (no data or weights needed)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Reconstruct a posed capture in the D-NeRF layout (transforms_{train,val,test}.json)."),
    ui: str = HeadlessUiOpt,
    host: Optional[str] = HostOpt,
    port: Optional[int] = PortOpt,
    steps: Optional[int] = StepsOpt,
    config: Optional[Path] = ConfigOpt,
    overrides: Optional[list[str]] = OverridesArg,
) -> None:
    """Fit 4D Gaussians; prints held-out PSNR and writes a run folder under recordings/."""
    if sample == (data is not None):
        raise Text4DError("say what to fit: --sample for the built-in animated sample, or --data path/to/scene for a D-NeRF-layout capture")
    if data is not None:
        from text4d.app.recon import fit_scene

        fit_scene(data, ui=ui, host=host, port=port, steps=steps, config=config, overrides=overrides)
        return
    from text4d.app.sample import demo

    demo(host=host, port=port, ui=ui, steps=steps, config=config, overrides=overrides)


@app.command("demo")
def demo_cmd(
    ui: str = UiOpt,
    host: Optional[str] = HostOpt,
    port: Optional[int] = PortOpt,
    steps: Optional[int] = StepsOpt,
    config: Optional[Path] = ConfigOpt,
    overrides: Optional[list[str]] = OverridesArg,
) -> None:
    """Live session on the built-in animated sample: watch, scrub, orbit, pause/edit/resume, export."""
    from text4d.app.sample import demo

    demo(host=host, port=port, ui=ui, steps=steps, config=config, overrides=overrides)


@app.command()
def view(
    run_dir: Path = typer.Argument(..., help="A run folder under recordings/."),
    ui: str = UiOpt,
    host: Optional[str] = HostOpt,
    port: Optional[int] = PortOpt,
    steps: Optional[int] = StepsOpt,
    overrides: Optional[list[str]] = OverridesArg,
) -> None:
    """Reopen a finished or interrupted run (paused) to look, resume or export."""
    from text4d.app.kinds import view as view_run

    view_run(run_dir, ui=ui, host=host, port=port, steps=steps, overrides=overrides)


@sample_app.command("export")
def sample_export(
    out: Path = typer.Argument(..., help="Scene folder to write (replaced if it exists)."),
    format: str = typer.Option("dnerf", "--format", help="dnerf: transforms_{train,val,test}.json + RGBA PNGs."),
    train: int = typer.Option(100, "--train", min=1, help="Training views (random upper-hemisphere poses, random times)."),
    val: int = typer.Option(10, "--val", min=0),
    test: int = typer.Option(20, "--test", min=0, help="Held-out views (rings of poses, evenly spaced times)."),
    resolution: int = typer.Option(400, "--resolution", min=8),
    radius: float = typer.Option(2.0, "--radius", min=0.8, help="Camera distance from the creature."),
    seed: int = typer.Option(0, "--seed", help="Camera poses and times."),
    scene: str = typer.Option("creature", "--scene", help="creature (the sample) | whirligig (spinning textured rotor, thin fast arms, a specular jelly)."),
) -> None:
    """Write the built-in animated sample (or the whirligig test scene) as a posed capture (for text4d fit --data)."""
    from text4d.recon import export_sample_dnerf
    from text4d.samples import SCENES

    if format != "dnerf":
        raise Text4DError(f"--format must be dnerf, got {format!r}")
    if scene not in SCENES:
        raise Text4DError(f"--scene must be one of {', '.join(SCENES)}, got {scene!r}")
    typer.echo(f"wrote {export_sample_dnerf(out, n_train=train, n_val=val, n_test=test, resolution=resolution, radius=radius, seed=seed, scene=scene)}")


@app.command()
def replay(
    run_dir: Path = typer.Argument(..., help="A run folder under recordings/."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where the replay's run folder goes (default: beside the original)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads (default: as recorded; the same count replays bit-exactly)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda (default: the run's config)."),
    exports: bool = typer.Option(False, "--exports", help="Also redo the recorded exports."),
    atol: Optional[float] = typer.Option(None, "--atol", help="Accepted parameter difference when not bit-exact (default 0 on CPU, 1e-3 on GPU)."),
) -> None:
    """Re-execute a run (a chain: each of its stages) with the same edits at the same iterations and compare with the original."""
    from text4d.app.replay import replay_runs

    results = replay_runs(run_dir, out=out, threads=threads, device=device, exports=exports, atol=atol)
    for result in results:
        verdict = "bit-exact" if result.bit_exact else f"max |diff| {result.max_abs_diff:.3g} (atol {result.atol:g})"
        typer.echo(f"{result.original}: replayed {result.edits_applied} edits to iteration {result.iteration} in {result.seconds:.1f} s "
                   f"on {result.device} ({result.threads} threads): {verdict}")
        first = f", first differs at {result.first_metric_divergence}" if result.first_metric_divergence is not None else ""
        typer.echo(f"metrics: {result.metrics_compared} logged iterations compared, max |diff| {result.metrics_max_abs_diff:.3g}{first}")
        for note in result.notes:
            typer.echo(f"note: {note}")
        typer.echo(f"replay run folder: {result.replay}  (details in replay.json)")
    if not all(r.reproduced for r in results):
        raise typer.Exit(1)


@app.command("list")
def list_runs(root: Path = typer.Option(Path("recordings"), "--root", help="Folder holding run folders.")) -> None:
    """The runs under recordings/: name, date, stages done, iteration, best metric, problems."""
    from rich.console import Console

    from text4d.app.runs import find_runs, print_runs

    runs = find_runs(root)
    print_runs(runs, f"{len(runs)} run(s) in {root}", Console())


@app.command("record-scene")
def record_scene(
    run_dir: Path = typer.Argument(..., help="A run folder under recordings/."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for scene.viser + scene.html (default: <run>/exports/scene-it<N>)."),
    fps: float = typer.Option(12.0, "--fps", min=0.1),
) -> None:
    """Save the run's 4D result as a viser scene recording: scene.html plays in any browser, no text4d needed."""
    from text4d.app.kinds import open_run
    from text4d.export.scene import export_viser_scene
    from text4d.extras import require as require_extra

    require_extra("viewer")
    session = open_run(run_dir).session
    stage = session.stage
    target = out or session.run.exports_dir / f"scene-it{stage.iteration:06d}"
    typer.echo(f"wrote {export_viser_scene(stage, target, fps=fps)}")


def _given(**options: object) -> list[str]:
    """``key=value`` overrides for the command-line options the user gave (None and "" mean not given)."""
    return [f"{key}={value}" for key, value in options.items() if value is not None and value != ""]


def _tiny(tiny: bool | None, device: str | None) -> bool:
    """``--tiny/--full-size`` as given; by default the CPU smoke size wherever the bench runs on the CPU."""
    if tiny is not None:
        return tiny
    from text4d.devices import resolve_device

    return resolve_device(device or "auto").type != "cuda"


def _print_json(result: dict) -> None:
    typer.echo(json.dumps(result, indent=2))


@bench_app.command("rasterizer")
def bench_rasterizer(
    backend: str = typer.Option("auto", help="auto | torch | cpu | gsplat | inria"),
    device: Optional[str] = typer.Option(None, help="cuda | cpu (default: cuda when available)"),
    resolution: Optional[int] = typer.Option(None, help="default 512 on a GPU, 128 on CPU"),
    sizes: Optional[str] = typer.Option(None, help="comma-separated Gaussian counts (default 10k,100k,1M on a GPU; 1k,10k,100k on CPU)"),
) -> None:
    """Render ms (fwd, fwd+bwd) per Gaussian count, and batched vs per-view calls."""
    from text4d.app.bench.rasterizer import run

    _print_json(run(sizes=tuple(int(s) for s in sizes.split(",")) if sizes else None, resolution=resolution, backend=backend, device=device))


@bench_app.command("dynamic")
def bench_dynamic(
    config: Optional[Path] = ConfigOpt,
    device: Optional[str] = typer.Option(None),
    target_psnr: float = typer.Option(30.0),
    tiny: Optional[bool] = typer.Option(None, "--tiny/--full-size", help="The first 300 iterations, 128 px renders; default: tiny when the bench runs on the CPU."),
    overrides: Optional[list[str]] = OverridesArg,
) -> None:
    """Fit the sample: iterations/s, seconds to the target held-out PSNR, deformation overhead."""
    from text4d.app.bench.dynamic import run

    _print_json(run(config=config, overrides=overrides, device=device, target_psnr=target_psnr, tiny=_tiny(tiny, device)))


@bench_app.command("cpu-demo")
def bench_cpu_demo(
    target_psnr: float = typer.Option(24.0, help="Held-out PSNR the studio should show."),
    watch: float = typer.Option(180.0, help="Report the PSNR shown this many seconds into training."),
    threads: Optional[int] = typer.Option(None, help="CPU threads (default: torch's, i.e. the cores)."),
    overrides: Optional[list[str]] = OverridesArg,
) -> None:
    """The demo and fit --sample on CPU with the preset they pick: set-up s, s to the target PSNR, PSNR at --watch s, it/s, fit s."""
    from text4d.app.bench.cpu_demo import run

    _print_json(run(target_psnr=target_psnr, watch_seconds=watch, overrides=overrides, threads=threads))


@bench_app.command("viewer")
def bench_viewer(
    config: Optional[Path] = ConfigOpt,
    device: Optional[str] = typer.Option(None),
    resolution: Optional[int] = typer.Option(None),
    seconds: float = typer.Option(5.0),
    overrides: Optional[list[str]] = OverridesArg,
) -> None:
    """Viewer frames/s while training, training it/s with and without a viewer, scrub latency."""
    from text4d.app.bench.viewer import run

    _print_json(run(config=config, overrides=overrides, device=device, resolution=resolution, seconds=seconds))


@bench_app.command("drag")
def bench_drag(
    config: Optional[Path] = ConfigOpt,
    device: Optional[str] = typer.Option(None),
    resolution: Optional[int] = typer.Option(None, help="Frame size (default 512 on a GPU, 128 on the CPU)."),
    gestures: int = typer.Option(8, min=1, help="Drags, each on a new control point, released as an edit and undone."),
    events: int = typer.Option(30, min=1, help="Gizmo poses per drag (sent at 60 Hz)."),
    tiny: Optional[bool] = typer.Option(None, "--tiny/--full-size", help="CPU size (64 px sample, 128 control points); default: tiny on the CPU."),
    overrides: Optional[list[str]] = OverridesArg,
) -> None:
    """Control-point drag to displayed frame while training (the ARAP preview through the studio's frame path), and edit commit time."""
    from text4d.app.bench.drag import run

    _print_json(run(config=config, overrides=overrides, device=device, resolution=resolution, gestures=gestures, events=events, tiny=tiny))


@bench_app.command("recon")
def bench_recon(
    config: Optional[Path] = ConfigOpt,
    device: Optional[str] = typer.Option(None),
    target_psnr: float = typer.Option(30.0),
    data: Optional[Path] = typer.Option(None, help="A D-NeRF-layout scene instead of the exported built-in sample."),
    compare_init: bool = typer.Option(False, help="Fit once per initialisation (hull, random) and compare."),
    tiny: Optional[bool] = typer.Option(None, "--tiny/--full-size", help="CPU smoke size (48 px, 40 views); default: tiny when the bench runs on the CPU."),
    compare: Optional[list[Path]] = typer.Option(None, "--compare", help="Fit each of these configs (repeat the option; the first is the baseline) on each --scene and compare."),
    scene: Optional[list[str]] = typer.Option(None, "--scene", help="With --compare: creature (the sample) and/or whirligig; default creature."),
    budget: Optional[float] = typer.Option(None, "--budget", min=1.0, help="With --compare: most training seconds per fit."),
    eval_every: int = typer.Option(100, "--eval-every", min=1, help="Test-split evaluation interval (iterations)."),
    out: Optional[Path] = typer.Option(None, "--out", help="With --compare: folder for recon_compare.json and the <scene>_sharpest.png pictures."),
    overrides: Optional[list[str]] = OverridesArg,
) -> None:
    """Reconstruct the sample exported as D-NeRF (400x400, 100 views): seconds to the target test PSNR, final PSNR/SSIM, it/s, fps at 800x800.

    With --compare: several configs (deformation models, recipes) on one or more procedural scenes."""
    if compare:
        from text4d.app.bench.recon import compare as compare_configs
        from text4d.samples import SCENES

        scenes = tuple(scene or ("creature",))
        bad = [s for s in scenes if s not in SCENES]
        if bad:
            raise Text4DError(f"--scene must be one of {', '.join(SCENES)}, got {bad[0]!r}")
        _print_json(compare_configs(list(compare), scenes, overrides=overrides, device=device, target_psnr=target_psnr, eval_every=eval_every,
                                    budget_seconds=budget, out=out, tiny=_tiny(tiny, device)))
        return
    from text4d.app.bench.recon import run

    _print_json(run(config=config, overrides=overrides, device=device, target_psnr=target_psnr, data=data,
                    inits=("hull", "random") if compare_init else None, tiny=_tiny(tiny, device), eval_every=eval_every))


@bench_app.command("motion")
def bench_motion(
    tiny: Optional[bool] = typer.Option(None, "--tiny/--full-size",
                                        help="Tiny random models (a CPU smoke test), not the ZeroScope size; default: tiny when the bench runs on the CPU."),
    device: Optional[str] = typer.Option(None),
    compile: bool = typer.Option(False, help="Also time torch.compile'd inference."),
    train: bool = typer.Option(True, help="Time the training steps."),
    infer: bool = typer.Option(True, help="Time inference and the DDIM inversion."),
) -> None:
    """MotionDirector-style training step, inference and inversion timings (ZeroScope architecture, random weights)."""
    from text4d.app.bench.motion import run

    _print_json(run(tiny=_tiny(tiny, device), device=device, compile=compile, train=train, infer=infer))


@app.command("static")
def static_cmd(
    image: Optional[Path] = typer.Option(None, "--image", help="Input image (RGBA, or RGB to be matted)."),
    ply: Optional[Path] = typer.Option(None, "--ply", help="Import a 3DGS .ply (LGM, DreamGaussian, ...) instead of optimising."),
    radius: Optional[float] = typer.Option(None, "--radius", help="Camera distance the --ply was made for (2 = DreamGaussian, as the original's radius=2)."),
    zero123: Optional[Path] = typer.Option(None, "--zero123", help="Local diffusers-format Zero123 folder (none: reference loss only)."),
    ui: str = UiOpt,
    steps: Optional[int] = StepsOpt,
    config: Optional[Path] = ConfigOpt,
    overrides: Optional[list[str]] = OverridesArg,
) -> None:
    """Image -> static 3D Gaussians (DreamGaussian + Zero123 SDS), or import a .ply; writes model.ply in a run folder."""
    from text4d.app.static import static

    extra = _given(image=image, ply=ply, ply_radius=radius, zero123=zero123)
    static(config, extra + list(overrides or []), ui=ui, steps=steps)


@app.command("animate")
def animate_cmd(
    static: Optional[Path] = typer.Option(None, "--static", help="Static .ply (from text4d static, LGM, ...)."),
    frames: Optional[Path] = typer.Option(None, "--frames", help="Driving video as an RGBA frames folder."),
    video: Optional[Path] = typer.Option(None, "--video", help="A Consistent4D-layout clip folder (same as --frames; eval_* ground truth is scored)."),
    zero123: Optional[Path] = typer.Option(None, "--zero123", help="Local diffusers-format Zero123 folder."),
    radius: Optional[float] = typer.Option(None, "--radius", help="Camera distance the --static model was made for (the original's radius=2)."),
    clip: Optional[Path] = typer.Option(None, "--clip", help="Local CLIP folder: also score CLIP similarity on the clip's ground-truth views."),
    ui: str = UiOpt,
    steps: Optional[int] = StepsOpt,
    config: Optional[Path] = ConfigOpt,
    overrides: Optional[list[str]] = OverridesArg,
) -> None:
    """Dynamic stage: deform the static Gaussians to follow the driving video, Zero123 SDS on novel views."""
    from text4d.app.animate import animate

    if frames and video:
        raise Text4DError("give --frames or --video, not both")
    extra = _given(frames=frames or video, static=static, zero123=zero123, static_radius=radius, clip_model=clip)
    animate(config, extra + list(overrides or []), ui=ui, steps=steps)


@app.command("run")
def run_cmd(
    prompt: Optional[str] = typer.Argument(None, help="Text prompt (text -> video -> 4D)."),
    image: Optional[Path] = typer.Option(None, "--image", help="Input image (image -> SVD video -> 4D)."),
    video: Optional[Path] = typer.Option(None, "--video", help="RGBA frames folder (video -> 4D)."),
    t2v: Optional[Path] = typer.Option(None, "--t2v", help="Local text-to-video model folder (ZeroScope)."),
    motion: Optional[Path] = typer.Option(None, "--motion", help="MotionDirector checkpoint."),
    svd: Optional[Path] = typer.Option(None, "--svd", help="Local Stable Video Diffusion folder."),
    zero123: Optional[Path] = typer.Option(None, "--zero123", help="Local Zero123 folder."),
    ui: str = HeadlessUiOpt,
    config: Optional[Path] = ConfigOpt,
    overrides: Optional[list[str]] = typer.Option(None, "--set", "-s", help="key=value; static.KEY / dynamic.KEY go to that stage."),
) -> None:
    """The whole chain; every stage's output is kept in the run folder (re-run with run_dir=... redo=[static])."""
    from text4d.app.chain import run

    extra = _given(prompt=prompt, image=image, video=video, t2v=t2v, motion=motion, svd=svd, zero123=zero123)
    typer.echo(str(run(config, extra + list(overrides or []), ui=ui)))


@bench_app.command("static")
def bench_static(
    config: str = typer.Option("dg", help="comma-separated configs under configs/static/"),
    device: Optional[str] = typer.Option(None),
    tiny: Optional[bool] = TinyZero123Opt,
    iters: int = typer.Option(20, help="measured iterations per resolution phase"),
    full: bool = FullRunOpt,
) -> None:
    """Static stage s/iteration per resolution phase, total and peak GiB (full-size random Zero123)."""
    from text4d.app.bench.static import run

    _print_json(run(configs=tuple(config.split(",")), device=device, tiny=_tiny(tiny, device), measure_iters=iters, full=full))


@bench_app.command("animate")
def bench_animate(
    config: str = typer.Option("4d,4d_demo", help="comma-separated configs under configs/dynamic/"),
    device: Optional[str] = typer.Option(None),
    tiny: Optional[bool] = TinyZero123Opt,
    iters: int = typer.Option(20, help="measured iterations per resolution phase"),
    full: bool = FullRunOpt,
    overrides: Optional[list[str]] = OverridesArg,
) -> None:
    """Dynamic stage with Zero123 SDS: s/iteration, total for the config's iters, peak GiB (full-size random Zero123)."""
    from text4d.app.bench.animate import run

    _print_json(run(configs=tuple(config.split(",")), device=device, tiny=_tiny(tiny, device), measure_iters=iters, overrides=overrides, full=full))


@app.command("export")
def export_cmd(
    run_dir: Path = typer.Argument(..., help="A run folder under recordings/."),
    format: str = typer.Option(..., "--format", "-f", help="ply-seq | spz-seq | gltf-splat | web | mp4 | gif | viser | obj-seq | glb | test-video"),
    frames: Optional[str] = typer.Option(None, "--frames", help="ply-seq/spz-seq/gltf-splat/obj-seq/glb frames: 0:14, 0:14:2 or 0,3,7 (default all)."),
    frame: Optional[int] = typer.Option(None, "--frame", help="One frame only (the same as --frames N)."),
    sh_layout: Optional[str] = typer.Option(None, "--sh-layout", help="ply-seq: native (the model's SH bands) or full (degree 3, what Unity/Unreal importers need)."),
    fps: Optional[float] = typer.Option(None, "--fps", help="web: playback frames per second (default 12)."),
    resolution: Optional[int] = typer.Option(None, "--resolution", help="Density grid points per axis (default 128)."),
    texture: Optional[int] = typer.Option(None, "--texture", help="Texture size in texels (default 1024)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output file/folder (default under the run's exports/)."),
    config: Optional[Path] = ConfigOpt,
    overrides: Optional[list[str]] = OverridesArg,
) -> None:
    """Export a run of any kind: 3DGS .ply / .spz / glTF-splat sequence, offline web player, orbit mp4/gif, viser scene, mesh OBJ sequence or animated GLB, test video."""
    from text4d.app.export import export_run

    if frame is not None and frames is not None:
        raise Text4DError("give --frame N or --frames, not both")
    export_run(run_dir, format, frames=str(frame) if frame is not None else frames, resolution=resolution, texture=texture, out=out, config=config,
               overrides=overrides, sh_layout=sh_layout, fps=fps)


@bench_app.command("export")
def bench_export(
    device: Optional[str] = typer.Option(None),
    source: str = typer.Option("fit", help="fit (fit the sample first) | surface (Gaussians on the sample's surface)"),
    run_dir: Optional[Path] = typer.Option(None, "--run", help="Use a run folder's checkpoint instead."),
    frames: int = typer.Option(14),
    resolution: int = typer.Option(128),
    texture: int = typer.Option(1024),
    repeats: int = typer.Option(3),
    tiny: Optional[bool] = typer.Option(None, "--tiny/--full-size", help="Tiny sizes: a CPU smoke run; default: tiny when the bench runs on the CPU."),
    overrides: Optional[list[str]] = OverridesArg,
) -> None:
    """Seconds for an OBJ sequence + GLB (target <= 10 s for 14 frames at 128^3 on an H100), mesh-vs-Gaussian IoU/PSNR."""
    from text4d.app.bench.export import run

    _print_json(run(device=device, source=source, run_dir=None if run_dir is None else str(run_dir), frames=frames, resolution=resolution,
                    texture=texture, repeats=repeats, tiny=_tiny(tiny, device), overrides=overrides))


@bench_app.command("splats")
def bench_splats(
    device: Optional[str] = typer.Option(None),
    run_dir: Optional[Path] = typer.Option(None, "--run", help="Use a run folder's checkpoint instead of fitting the sample."),
    frames: int = typer.Option(14),
    repeats: int = typer.Option(3),
    tiny: Optional[bool] = typer.Option(None, "--tiny/--full-size", help="Tiny fit: a CPU smoke run; default: tiny when the bench runs on the CPU."),
    browser: bool = typer.Option(False, "--browser", help="Also load and play the web player (SPZ vs PLY frames) in headless Chromium."),
    viewport: int = typer.Option(800, help="Browser viewport (square) for --browser."),
) -> None:
    """Seconds and MB per frame of ply-seq (native/full), spz-seq, gltf-splat and web; with --browser the player's load time and fps."""
    from text4d.app.bench.splats import run

    _print_json(run(device=device, run_dir=None if run_dir is None else str(run_dir), frames=frames, repeats=repeats, tiny=_tiny(tiny, device), browser=browser, viewport=viewport))


@app.command("batch")
def batch_cmd(
    jobs: Optional[Path] = typer.Argument(None, help="Jobs file: a YAML list of jobs (sample, dnerf, prompt, image or video, each with optional "
                                                     "name/config/overrides/exports), or a text file with one prompt per line."),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides applied to every job (before its own)", show_default=False),
    status: Optional[Path] = typer.Option(None, "--status", help="Re-print the table of a batch folder (recordings/batch-<time>) and exit."),
    address: Optional[str] = typer.Option(None, "--address", help="auto (the Ray cluster on this machine) or ray://head:10001; default: a local Ray instance for this call."),
    gpus_per_job: float = typer.Option(1.0, "--gpus-per-job", min=0, help="GPUs per job (fractions share a GPU); jobs run on CPU where the cluster has none."),
    cpus_per_job: float = typer.Option(1.0, "--cpus-per-job", min=0.01),
    max_retries: int = typer.Option(2, "--max-retries", min=0, help="Extra attempts of a failed job; each resumes from its autosave."),
    out: Path = typer.Option(Path("recordings"), "--out", help="Where batch folders go."),
    new: bool = typer.Option(False, "--new", help="Start a new batch folder instead of resuming this jobs file's last one."),
) -> None:
    """Many assets over all GPUs of a machine or a Ray cluster; re-running skips finished jobs and resumes interrupted ones."""
    from text4d.app.batch import print_status, run_batch

    if status is not None:
        print_status(status)
        return
    if jobs is None:
        raise Text4DError("give a jobs file (text4d batch jobs.yaml), or --status recordings/batch-<time>")
    result = run_batch(jobs, overrides or [], address=address, gpus_per_job=gpus_per_job, cpus_per_job=cpus_per_job, max_retries=max_retries, out=out, new=new)
    if result.interrupted:
        raise typer.Exit(130)
    if result.count("failed"):
        raise typer.Exit(1)


@bench_app.command("batch")
def bench_batch(
    jobs: int = typer.Option(8, help="Identical sample-fit jobs per run."),
    tiny: Optional[bool] = typer.Option(None, "--tiny/--full-size", help="CPU smoke size (32 px, a few iterations); default: tiny when the bench runs on the CPU."),
    devices: Optional[int] = typer.Option(None, help="GPUs (or CPU workers) for the 'all' run; default: every GPU, or 2 CPU workers."),
    overrides: Optional[list[str]] = OverridesArg,
) -> None:
    """N identical sample fits on 1 vs all GPUs through text4d batch: throughput ratio, scheduling overhead per job."""
    from text4d.app.bench.batch import run

    _print_json(run(jobs=jobs, tiny=_tiny(tiny, None), devices=devices, overrides=overrides))


def main() -> None:
    """Console entry point: user-fixable errors print one line and exit 2, no traceback; Ctrl-C and SIGTERM stop and save."""
    from text4d.app.interrupts import interrupted_exit_code, stop_on_sigterm

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stop_on_sigterm()
    try:
        app()
    except (Text4DError, ModuleNotFoundError) as e:
        error = user_error(e)
        if not isinstance(error, Text4DError):  # a module of no extra: a broken install or a bug, keep the traceback
            raise
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(interrupted_exit_code())
    except SystemExit as e:
        if e.code == 130:  # Typer's exit for a KeyboardInterrupt (Ctrl-C, or SIGTERM turned into one)
            sys.exit(interrupted_exit_code())
        raise


if __name__ == "__main__":
    main()
