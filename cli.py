"""text4d command line: parse -> config -> text4d API. No logic lives here."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer

from text4d.errors import Text4DError
from text4d.video.commands import motion_app, video_app

app = typer.Typer(help="text4d: text / image / video -> animated 3D Gaussians, with a live studio.", no_args_is_help=True, add_completion=False)
bench_app = typer.Typer(help="Benchmarks that print JSON.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(motion_app, name="motion")
app.add_typer(video_app, name="video")

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config file; key=value overrides follow the command.")
OverridesArg = typer.Argument(None, help="key=value config overrides (OmegaConf dotlist)", show_default=False)
UiOpt = typer.Option("viser", "--ui", help="viser (web studio) or none (headless).")
HostOpt = typer.Option(None, "--host", help="Viewer host (default 127.0.0.1).")
PortOpt = typer.Option(None, "--port", help="Viewer port (default 8080; a busy port moves to the next free one).")
StepsOpt = typer.Option(None, "--steps", help="Train this many iterations, then pause (headless: then export and exit).")


@app.command()
def fit(
    sample: bool = typer.Option(False, "--sample", help="Fit the built-in animated sample (no data or weights needed)."),
    ui: str = typer.Option("none", "--ui", help="none (headless, default) or viser."),
    config: Optional[Path] = ConfigOpt,
    overrides: Optional[list[str]] = OverridesArg,
) -> None:
    """Fit 4D Gaussians; prints held-out PSNR and writes a run folder under recordings/."""
    from text4d.commands_live import demo

    if not sample:
        raise Text4DError("say what to fit: --sample for the built-in animated sample")
    demo(ui=ui, config=config, overrides=overrides)


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
    from text4d.commands_live import demo

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
    from text4d.commands_live import view as view_run

    view_run(run_dir, host=host, port=port, ui=ui, steps=steps, overrides=overrides)


def _print_json(result: dict) -> None:
    typer.echo(json.dumps(result, indent=2))


@bench_app.command("rasterizer")
def bench_rasterizer(
    backend: str = typer.Option("auto", help="auto | torch | gsplat | inria"),
    device: Optional[str] = typer.Option(None, help="cuda | cpu (default: cuda when available)"),
    resolution: int = typer.Option(512),
    sizes: str = typer.Option("10000,100000,1000000", help="comma-separated Gaussian counts"),
) -> None:
    """Render ms (fwd, fwd+bwd) per Gaussian count, and batched vs per-view calls."""
    from text4d.bench.rasterizer import run

    _print_json(run(sizes=tuple(int(s) for s in sizes.split(",")), resolution=resolution, backend=backend, device=device))


@bench_app.command("dynamic")
def bench_dynamic(
    config: Optional[Path] = ConfigOpt,
    device: Optional[str] = typer.Option(None),
    target_psnr: float = typer.Option(30.0),
    overrides: Optional[list[str]] = OverridesArg,
) -> None:
    """Fit the sample: iterations/s, seconds to the target held-out PSNR, deformation overhead."""
    from text4d.bench.dynamic import run

    _print_json(run(config=config, overrides=overrides, device=device, target_psnr=target_psnr))


@bench_app.command("viewer")
def bench_viewer(
    config: Optional[Path] = ConfigOpt,
    device: Optional[str] = typer.Option(None),
    resolution: Optional[int] = typer.Option(None),
    seconds: float = typer.Option(5.0),
    overrides: Optional[list[str]] = OverridesArg,
) -> None:
    """Viewer frames/s while training, training it/s with and without a viewer, scrub latency."""
    from text4d.bench.viewer import run

    _print_json(run(config=config, overrides=overrides, device=device, resolution=resolution, seconds=seconds))


@bench_app.command("motion")
def bench_motion(
    tiny: bool = typer.Option(False, help="Tiny random models (a CPU smoke test), not the ZeroScope size."),
    device: Optional[str] = typer.Option(None),
    compile: bool = typer.Option(False, help="Also time torch.compile'd inference."),
) -> None:
    """MotionDirector-style training step, inference and inversion timings (ZeroScope architecture, random weights)."""
    from text4d.bench.motion import run

    _print_json(run(tiny=tiny, device=device, compile=compile))


def main() -> None:
    """Console entry point: user-fixable errors print one line and exit 2, no traceback."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except Text4DError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
