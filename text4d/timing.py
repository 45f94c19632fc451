"""The one place where frame indices and normalised time meet.

Time ``t`` is normalised to [0, 1] over the clip: frame 0 is t=0 and the last
frame is t=1 (a single-frame clip sits at t=0). Every module converts through
these helpers so a clip of 14 frames and its 7-frame downsample agree on what
"t=0.5" means.
"""

from __future__ import annotations

import math

import torch


def frame_to_t(index: int | float, num_frames: int) -> float:
    """Normalised time of frame ``index`` in a clip of ``num_frames`` frames."""
    if num_frames <= 1:
        return 0.0
    return float(index) / float(num_frames - 1)


def t_to_frame(t: float, num_frames: int) -> int:
    """Nearest frame index for normalised time ``t`` (clamped to the clip)."""
    if num_frames <= 1:
        return 0
    return int(round(min(max(float(t), 0.0), 1.0) * (num_frames - 1)))


def frame_times(num_frames: int, device: torch.device | str | None = None) -> torch.Tensor:
    """All frame times of a clip, shape [num_frames]."""
    if num_frames <= 1:
        return torch.zeros(max(num_frames, 0), device=device)
    return torch.linspace(0.0, 1.0, num_frames, device=device)


def clip_frame_times(num_frames: int) -> list[float]:
    """The normalised time of every frame of a clip of ``num_frames`` frames (an unretimed clip's output times)."""
    return [frame_to_t(i, num_frames) for i in range(max(num_frames, 1))]


RETIME_OPS = ("trim", "speed", "loop", "hold", "curve")


class Retime:
    """Which times of a fitted clip an output clip shows: trims, speed changes, loops, holds, remap curves.

    Training data has its own times (the fitted clip's normalised time, frame 0 at 0 and its last
    frame at 1) and a stage fits and renders *model time*. A retime changes only what the output
    clip is: how many frames the studios' slider, playback and every export have, and which model
    time each of them shows (:meth:`times`). So edits of the timing never touch what was learned,
    a pose edit or crop at a frame happens at that frame's model time, and ground-truth comparisons
    (held-out views, test videos) keep the data's own times.

    The retime is the list of operations applied so far, each to the clip the previous ones made
    (in its frames, which is what a user sees when choosing the next one):

    * ``trim(start, end)``: keep frames ``start..end`` (inclusive);
    * ``speed(factor)``: play ``factor`` times as fast (fewer frames; < 1: slower, more frames);
    * ``loop(count)``: play the clip ``count`` times;
    * ``hold(frame, count)``: show frame ``frame`` for ``count`` extra frames (a held pose);
    * ``curve(points, frames=None)``: a time remap curve: ``points`` are (x, y) pairs in [0, 1],
      x strictly increasing from 0 to 1; output position x of the clip shows position y(x) of the
      previous clip (piecewise linear between points: ease in/out, reverse, ramps), over
      ``frames`` frames (default: as many as before).

    Operations are evaluated backwards from an output frame to a position in the fitted clip, so
    they compose exactly (a speed change after a loop speeds every loop) and the list is what a
    checkpoint and the edit log store. A position between fitted frames is a model time between
    them: the deformation is continuous in time.

    Example::

        clip = Retime().apply({"op": "trim", "start": 2, "end": 9}, 14).apply({"op": "loop", "count": 2}, 14)
        clip.times(14)  # 16 model times: frames 2..9 of the fitted 14, twice
    """

    def __init__(self, ops: list[dict] | None = None):
        self.ops: list[dict] = [dict(op) for op in (ops or [])]

    def apply(self, op: dict, num_frames: int) -> "Retime":
        """This retime followed by ``op`` (validated against the clip so far); raises ``ValueError`` naming the bad value."""
        clean = _checked(dict(op), self.frames(num_frames))
        return Retime([*self.ops, clean])

    def frames(self, num_frames: int) -> int:
        """Frames of the output clip of a fitted clip of ``num_frames`` frames."""
        return self._lengths(num_frames)[-1]

    def times(self, num_frames: int) -> list[float]:
        """Model time of every output frame (python floats: the same values :func:`frame_to_t` gives unretimed)."""
        lengths = self._lengths(num_frames)
        if not self.ops:
            return clip_frame_times(num_frames)
        out = []
        for i in range(lengths[-1]):
            x = float(i)
            for op, before in zip(reversed(self.ops), reversed(lengths[:-1])):
                x = _source(op, x, before)
            out.append(frame_to_t(x, num_frames))
        return out

    def describe(self) -> str:
        """The operations in words, for a panel ("trim 2-9 · loop x2"); "" when the clip is as fitted."""
        words = {
            "trim": lambda o: f"trim {o['start']}-{o['end']}",
            "speed": lambda o: f"speed x{o['factor']:g}",
            "loop": lambda o: f"loop x{o['count']}",
            "hold": lambda o: f"hold frame {o['frame']} +{o['count']}",
            "curve": lambda o: f"curve ({len(o['points'])} points)",
        }
        return " · ".join(words[o["op"]](o) for o in self.ops)

    def _lengths(self, num_frames: int) -> list[int]:
        """Frame counts of the clip before any operation and after each one."""
        lengths = [max(num_frames, 1)]
        for op in self.ops:
            lengths.append(_frames_after(op, lengths[-1]))
        return lengths


def _frames_after(op: dict, frames: int) -> int:
    kind = op["op"]
    if kind == "trim":
        return int(op["end"]) - int(op["start"]) + 1
    if kind == "speed":
        return int(math.floor((frames - 1) / float(op["factor"]) + 1e-9)) + 1
    if kind == "loop":
        return frames * int(op["count"])
    if kind == "hold":
        return frames + int(op["count"])
    return int(op.get("frames") or frames)


def _source(op: dict, x: float, frames: int) -> float:
    """Position in the clip before ``op`` (of ``frames`` frames) shown at position ``x`` after it."""
    last = float(frames - 1)
    kind = op["op"]
    if kind == "trim":
        return min(x + int(op["start"]), last)
    if kind == "speed":
        return min(x * float(op["factor"]), last)
    if kind == "loop":
        return min(x % frames, last)
    if kind == "hold":
        at, count = int(op["frame"]), int(op["count"])
        return x if x <= at else float(at) if x <= at + count else x - count
    points = op["points"]
    span = float(_frames_after(op, frames) - 1)
    u = x / span if span > 0 else 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if u <= x1:
            return last * (y0 + (y1 - y0) * (u - x0) / (x1 - x0))
    return last * points[-1][1]


def _checked(op: dict, frames: int) -> dict:
    """``op`` with its numbers as ints/floats, or ``ValueError`` saying which value is wrong for a clip of ``frames`` frames."""
    kind = op.get("op")
    if kind not in RETIME_OPS:
        raise ValueError(f"retime op must be one of {', '.join(RETIME_OPS)}, got {kind!r}")
    want = {"trim": {"start", "end"}, "speed": {"factor"}, "loop": {"count"}, "hold": {"frame", "count"}, "curve": {"points", "frames"}}[kind]
    extra = set(op) - want - {"op"}
    if extra:
        raise ValueError(f"retime {kind} takes {', '.join(sorted(want))}; unknown {', '.join(sorted(extra))}")

    def whole(name: str, lo: int, hi: int | None = None) -> int:
        value = op.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
            raise ValueError(f"retime {kind}: {name} must be a whole number, got {value!r}")
        if value < lo or (hi is not None and value > hi):
            raise ValueError(f"retime {kind}: {name} must be in {lo}..{hi if hi is not None else 'any'}, got {int(value)}")
        return int(value)

    if kind == "trim":
        start = whole("start", 0, frames - 1)
        return {"op": kind, "start": start, "end": whole("end", start, frames - 1)}
    if kind == "speed":
        factor = op.get("factor")
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor) or not 0.05 <= factor <= 20:
            raise ValueError(f"retime speed: factor must be a number in 0.05..20, got {factor!r}")
        if _frames_after({"op": kind, "factor": factor}, frames) > 100_000:
            raise ValueError(f"retime speed: factor {factor} would make more than 100000 frames")
        return {"op": kind, "factor": float(factor)}
    if kind == "loop":
        count = whole("count", 2, 1000)
        if frames * count > 100_000:
            raise ValueError(f"retime loop: {count} loops of {frames} frames would make more than 100000 frames")
        return {"op": kind, "count": count}
    if kind == "hold":
        return {"op": kind, "frame": whole("frame", 0, frames - 1), "count": whole("count", 1, 100_000)}
    points = op.get("points")
    try:
        if not isinstance(points, (list, tuple)):
            raise TypeError(points)
        pts = [(float(x), float(y)) for x, y in points]
    except (TypeError, ValueError):
        raise ValueError(f"retime curve: points must be [x, y] pairs, got {points!r}") from None
    if len(pts) < 2 or pts[0][0] != 0.0 or pts[-1][0] != 1.0 or any(b[0] <= a[0] for a, b in zip(pts, pts[1:])):
        raise ValueError("retime curve: points need x strictly increasing from 0 to 1")
    if not all(math.isfinite(y) and 0.0 <= y <= 1.0 for _, y in pts):
        raise ValueError("retime curve: every y must be in [0, 1]")
    out: dict = {"op": kind, "points": [list(p) for p in pts]}
    if op.get("frames") is not None:
        out["frames"] = whole("frames", 1, 100_000)
    return out
