"""Driving a Session from a command line: headless with a progress bar, or behind the web studio.

Kept apart from ``text4d.app.sample`` (which builds stages) so any front
end or test can drive any stage's session the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from rich.console import Console

from text4d.app.interrupts import Terminated
from text4d.errors import ConfigError, Text4DError
from text4d.extras import require as require_extra
from text4d.formatting import format_rate
from text4d.session import Session, SessionStats
from viewer.config import ViewerConfig

UI = str  # "viser", "dpg", "none", or front ends joined by commas ("viser,dpg"): see parse_ui
FRONT_ENDS = ("viser", "dpg")


def viewer_overrides(host: str | None, port: int | None) -> list[str]:
    """``--host/--port`` as dotlist overrides of a live config's ``viewer`` section."""
    return ([f"viewer.host={host}"] if host is not None else []) + ([f"viewer.port={port}"] if port is not None else [])


def parse_ui(ui: str) -> tuple[str, ...]:
    """``--ui`` -> the front ends to attach: ``("none",)``, ``("viser",)``, ``("dpg",)`` or ``("viser", "dpg")``.

    Several front ends may watch one session at once (``--ui viser,dpg``); "none" stands alone.
    """
    parts = tuple(dict.fromkeys(p.strip() for p in str(ui).split(",") if p.strip()))
    if parts == ("none",) or (parts and all(p in FRONT_ENDS for p in parts)):
        return parts
    raise Text4DError(f"--ui must be viser, dpg, none, or viser,dpg (both front ends on one session); got {ui!r}")


def drive(session: Session, viewer_cfg: ViewerConfig, ui: UI, steps: int | None, console: Console,
          exports: Sequence[str] = (), keep_viewer: bool = True) -> None:
    """Start ``session``, queue ``steps`` (if any), run the chosen front end, and stop (saving) at the end.

    Headless runs finish with ``exports`` (formats of :data:`text4d.export.FORMATS`). With
    ``keep_viewer=False`` the web studio closes once nothing is left to train (a chain of stages moves
    on to the next one); a desktop window always stays until it is closed.
    """
    fronts = check_front_ends(ui)
    unknown = sorted(set(exports) - set(session.exporters))
    if unknown:
        raise Text4DError(f"unknown export {unknown}; choose from {sorted(session.exporters)}")
    session.start()
    try:
        if steps is not None:
            session.step(steps).result()
        if fronts == ("none",):
            headless(session, console, exports)
        else:
            serve(session, viewer_cfg, console, fronts, until_done=not keep_viewer and "dpg" not in fronts)
    finally:
        session.stop()


def serve(session: Session, viewer_cfg: ViewerConfig, console: Console, fronts: Sequence[str] = ("viser",), until_done: bool = False) -> None:
    """Attach the front ends in ``fronts`` to ``session``; return when the desktop window closes, on Ctrl-C,
    or (``until_done``) once nothing is left to train.

    SIGTERM (:class:`~text4d.app.interrupts.Terminated`) closes the front ends the same way and propagates, so
    the caller's ``finally`` saves the session and the process exits as terminated.
    """
    app = None
    if "viser" in fronts:
        from viewer.viser_app import ViewerApp

        app = ViewerApp(session, viewer_cfg).start()
        if viewer_cfg.port and app.port != viewer_cfg.port:
            console.print(f"[yellow]port {viewer_cfg.port} is busy; using {app.port}[/yellow]")
        console.print(f"text4d studio: [bold link={app.url}]{app.url}[/bold link]   (Ctrl-C to stop; the run is saved on exit)")
    try:
        if "dpg" in fronts:
            from viewer.dpg_app import run_desktop

            console.print("text4d desktop studio open (close the window to stop; the run is saved on exit)")
            run_desktop(session, viewer_cfg)
        elif until_done:
            while True:
                try:
                    session.wait(_done, timeout=1.0)
                    break
                except TimeoutError:
                    continue
        else:
            threading.Event().wait()
    except KeyboardInterrupt as e:
        console.print("stopping: saving the run ...")
        if isinstance(e, Terminated):  # Ctrl-C is how a user closes the studio; SIGTERM ends the process (exit 143)
            raise
    finally:
        if app is not None:
            app.stop()


def check_steps(steps: int | None) -> None:
    """``--steps`` must ask for at least one iteration (None: train to ``iters``)."""
    if steps is not None and steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {steps}")


def check_front_ends(ui: str) -> tuple[str, ...]:
    """Parse ``--ui`` and check what its front ends need, before any run folder or training exists.

    A missing display for ``dpg`` is then a one-line error, not a GLFW abort or an empty run folder.
    """
    fronts = parse_ui(ui)
    if "viser" in fronts:
        require_extra("viewer")
    if "dpg" in fronts:
        _check_desktop()
    return fronts


def _check_desktop() -> None:
    from viewer.display import require_display

    require_extra("dpg")
    require_display()


def headless(session: Session, console: Console, exports: Sequence[str] = ()) -> None:
    """Show progress until nothing is left to run, then export; a divergence or failure is an error.

    A reopened finished run with nothing to train says so, and keeps the exports already taken from its
    state (:meth:`Session.exported`) instead of rewriting them; missing ones are written.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    session.subscribe(lambda e: console.print(f"[red]{e.message}[/red]") if e.level == "error" else None)
    stats = session.stats()
    target = stats.iteration + stats.steps_left if stats.steps_left else stats.iters
    if _done(stats) and stats.iteration >= target:
        console.print(f"nothing to train: {session.run.path} is finished at iteration {stats.iteration} of {stats.iters} (--steps N trains further)")
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(stats.stage, total=target, completed=stats.iteration, info="")
        while not _done(stats):
            try:
                stats = session.wait(_moved_past(stats.iteration), timeout=0.5)
            except TimeoutError:
                continue
            loss = stats.losses.get("loss")
            psnr = stats.metrics.get("test_psnr")
            info = (f"loss {loss:.4g}" if loss is not None else "") + (f"  PSNR {psnr:.2f}" if psnr is not None else "") + f"  {format_rate(stats.it_per_s)}"
            bar.update(task, completed=stats.iteration, info=info)
    if stats.state == "error" or stats.iteration < target:
        raise Text4DError(f"training stopped at iteration {stats.iteration} of {target} ({stats.state}); see the messages above and {session.run.edits_path}")
    final = session.stats().metrics
    if "test_psnr" in final:
        lpips = f"  LPIPS {final['test_lpips']:.4f}" if "test_lpips" in final else ""
        console.print(f"held-out PSNR {final['test_psnr']:.2f} dB  SSIM {final.get('test_ssim', float('nan')):.4f}{lpips}  mask IoU {final.get('test_iou', float('nan')):.4f}")
    for kind in exports:
        kept = session.exported(kind)  # the same state exports the same files: keep them rather than rewrite them
        console.print(f"kept {kept} (exported from this very state; `text4d export` writes it again)" if kept else f"wrote {session.export(kind).result()}")


def _moved_past(iteration: int) -> Callable[[SessionStats], bool]:
    """A wait predicate: the session is past ``iteration``, or has nothing left to run."""
    return lambda s: s.iteration != iteration or _done(s)


def _done(s: SessionStats) -> bool:
    """Nothing left to run: finished, failed, or paused with no steps queued (including after a NaN rollback)."""
    return s.state in ("finished", "error") or (s.state == "paused" and s.steps_left == 0)
