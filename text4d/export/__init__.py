"""Every way a 4D result leaves text4d, in one table: :data:`FORMATS`.

A format knows where its output goes in a run's ``exports/`` folder, which extra it needs and
how to write it from a stage. The same table serves the studios' export buttons (through the
:class:`~text4d.session.Session`'s exporters, see :func:`exporters`) and ``text4d export``
(:func:`write`, with progress and chosen frames). What differs between runs is only how their
result is framed (:class:`ExportSettings`): a generated object is orbited at the default preset,
a posed capture as its cameras saw it.

Formats: the Gaussians themselves, one file per frame (there is no standard 4D splat format;
engines and players read per-frame sequences): ``ply-seq`` (standard 3DGS ``.ply``),
``spz-seq`` (Niantic's compact SPZ; the ``splat`` extra), ``gltf-splat`` (glTF with
``KHR_gaussian_splatting``) and ``web`` (a self-contained offline player folder on Spark; the
``splat`` extra); ``mp4`` / ``gif`` (an orbit while the clip plays), ``viser`` (a
browser-playable scene recording), ``obj-seq`` / ``glb`` (meshes; the ``mesh`` extra),
``test-video`` (prediction | ground truth on the held-out views).

Per-export options are fields of :class:`ExportSettings`; each format names the ones it reads
(:attr:`ExportFormat.options`), so ``text4d export`` refuses a flag the chosen format would
ignore without a special case per format.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from text4d.errors import ConfigError
from text4d.export.base import Exporter
from text4d.export.ply import SH_LAYOUTS
from text4d.extras import require as require_extra
from text4d.mesh.sequence import MeshConfig
from text4d.render.camera import Orbit
from text4d.stages.base import Progress, Stage

__all__ = ["FORMATS", "ExportFormat", "ExportSettings", "Exporter", "Progress", "exporters", "output_path", "write"]


@dataclass(frozen=True)
class ExportSettings:
    """How one run's result is framed and sized in its exports, and the options a user sets per export.

    ``sh_layout``: ``native`` (the model's SH bands) or ``full`` (always degree 3, what Unity's and
    Unreal's importers require; see :mod:`text4d.export.ply`). ``fps``: the web player's playback
    rate (frames per second of the clip).
    """

    orbit: Orbit = field(default_factory=Orbit)
    video_frames: int = 48
    video_resolution: int = 256
    test_video_fps: int = 10
    mesh: MeshConfig = field(default_factory=MeshConfig)
    sh_layout: str = "native"
    fps: float = 12.0

    def __post_init__(self) -> None:
        if self.sh_layout not in SH_LAYOUTS:
            raise ConfigError(f"--sh-layout {self.sh_layout!r} is not a layout; choose native (the model's SH bands) or full (degree 3, for Unity/Unreal importers)")
        if not self.fps > 0:
            raise ConfigError(f"--fps must be positive, got {self.fps}")


Writer = Callable[[Stage, Path, ExportSettings, "Sequence[int] | None", "Progress | None"], Path]


@dataclass(frozen=True)
class ExportFormat:
    """One format: its output name under ``exports/`` ({it} = iteration), the extra it needs, its writer."""

    name: str
    target: str
    write: Writer
    extra: str | None = None
    frames: bool = False  # whether a subset of frames can be chosen (``--frames``)
    needs_ground_truth: bool = False
    options: tuple[str, ...] = ()  # the per-export ExportSettings fields its writer reads (``text4d export`` flags)


def _ply(stage: Stage, path: Path, s: ExportSettings, frames: Sequence[int] | None, progress: Progress | None) -> Path:
    from text4d.export.ply import export_ply_sequence

    return export_ply_sequence(stage, path, progress=progress, sh_layout=s.sh_layout, frames=frames)


def _spz(stage: Stage, path: Path, s: ExportSettings, frames: Sequence[int] | None, progress: Progress | None) -> Path:
    from text4d.export.sequence import export_frames
    from text4d.export.spz import save_spz

    return export_frames(stage, path, ".spz", save_spz, frames, progress=progress)


def _gltf_splat(stage: Stage, path: Path, s: ExportSettings, frames: Sequence[int] | None, progress: Progress | None) -> Path:
    from text4d.export.gltf_splat import save_splat_glb
    from text4d.export.sequence import export_frames

    return export_frames(stage, path, ".glb", save_splat_glb, frames, progress=progress)


def _web(stage: Stage, path: Path, s: ExportSettings, frames: Sequence[int] | None, progress: Progress | None) -> Path:
    from text4d.export.web import export_web_player

    return export_web_player(stage, path, s.orbit, s.fps, progress)


def _orbit(stage: Stage, path: Path, s: ExportSettings, frames: Sequence[int] | None, progress: Progress | None) -> Path:
    from text4d.export.video import export_orbit_video

    if path.suffix == ".gif":  # a short, small loop for docs and chat
        return export_orbit_video(stage, path, s.orbit, max(12, s.video_frames // 2), min(s.video_resolution, 256), fps=12, progress=progress)
    return export_orbit_video(stage, path, s.orbit, s.video_frames, s.video_resolution, progress=progress)


def _scene(stage: Stage, path: Path, s: ExportSettings, frames: Sequence[int] | None, progress: Progress | None) -> Path:
    from text4d.export.scene import export_viser_scene

    return export_viser_scene(stage, path)


def _obj(stage: Stage, path: Path, s: ExportSettings, frames: Sequence[int] | None, progress: Progress | None) -> Path:
    from text4d.export.mesh import export_obj_sequence

    return export_obj_sequence(stage, path, s.mesh, frames, progress)


def _glb(stage: Stage, path: Path, s: ExportSettings, frames: Sequence[int] | None, progress: Progress | None) -> Path:
    from text4d.export.mesh import export_glb

    return export_glb(stage, path, s.mesh, frames, progress)


def _test_video(stage: Stage, path: Path, s: ExportSettings, frames: Sequence[int] | None, progress: Progress | None) -> Path:
    from text4d.export.video import export_test_video

    return export_test_video(stage, path, s.test_video_fps, progress)


FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("ply-seq", "ply-it{it:06d}", _ply, frames=True, options=("sh_layout",)),
    ExportFormat("spz-seq", "spz-it{it:06d}", _spz, extra="splat", frames=True),
    ExportFormat("gltf-splat", "gltf-splat-it{it:06d}", _gltf_splat, frames=True),
    ExportFormat("web", "web-it{it:06d}", _web, extra="splat", options=("fps",)),
    ExportFormat("mp4", "orbit-it{it:06d}.mp4", _orbit),
    ExportFormat("gif", "orbit-it{it:06d}.gif", _orbit),
    ExportFormat("viser", "scene-it{it:06d}", _scene, extra="viewer"),
    ExportFormat("obj-seq", "mesh-obj-it{it:06d}", _obj, extra="mesh", frames=True, options=("mesh",)),
    ExportFormat("glb", "mesh-it{it:06d}.glb", _glb, extra="mesh", frames=True, options=("mesh",)),
    ExportFormat("test-video", "test-it{it:06d}.mp4", _test_video, needs_ground_truth=True),
)}


def get(name: str, key: str = "export format") -> ExportFormat:
    """The format ``name``, or a one-line error naming ``key`` (where the name came from) and the formats."""
    if name not in FORMATS:
        raise ConfigError(f"{key} {name!r} is not a format text4d writes; choose from {', '.join(FORMATS)}")
    return FORMATS[name]


def output_path(exports_dir: Path, name: str, iteration: int) -> Path:
    """Where format ``name`` writes a run's result at ``iteration`` (under the run's ``exports/``)."""
    return exports_dir / get(name).target.format(it=iteration)


def write(name: str, stage: Stage, path: Path, settings: ExportSettings, frames: Sequence[int] | None = None,
          progress: Progress | None = None) -> Path:
    """Write ``stage``'s result as format ``name`` to ``path``; checks the format's extra first."""
    fmt = get(name)
    if fmt.extra is not None:
        require_extra(fmt.extra)
    if fmt.needs_ground_truth and stage.ground_truth() is None:
        raise ConfigError(f"{name} needs held-out views, and this run has none")
    return fmt.write(stage, path, settings, frames, progress)


def _exporter(name: str, settings: ExportSettings) -> Exporter:
    """The Session's exporter for format ``name`` (bound here: a lambda made in a loop would see the last name)."""
    return lambda stage, out, it, progress: write(name, stage, output_path(out, name, it), settings, progress=progress)


def exporters(settings: ExportSettings, has_ground_truth: bool) -> dict[str, Exporter]:
    """A Session's exporters: every format (the test video only for runs with held-out views)."""
    return {
        name: _exporter(name, settings)
        for name, fmt in FORMATS.items()
        if has_ground_truth or not fmt.needs_ground_truth
    }

