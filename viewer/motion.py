"""What the studios' Motion panels share: picking control points on screen and turning a gizmo's pose into a drag.

Front-end agnostic (the web studio's transform gizmo and the desktop studio's numeric offsets
both end here) and free of viser, like :mod:`viewer.controls`. Everything a panel does to the
motion goes through the :class:`~text4d.session.Session`: :meth:`Session.control_points` to
show and pick, :meth:`Session.render` with a drag to preview it, ``edit_pose`` to make it,
``retime``, ``undo_edit``/``redo_edit``, ``edit_remove`` and ``set`` (``lambda_edit``,
``train_motion``) for the rest.

Screen positions are normalised like viser reports pointer events: (0, 0) is the top-left of the
view, (1, 1) the bottom-right; cameras are OpenCV camera-to-world (x right, y down, z forward).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from text4d.gaussians.motion_edit import PoseDrag
from text4d.gaussians.quaternion import multiply
from text4d.session import pose_drag

MOTION_COMMANDS = frozenset({"edit_pose", "edit_remove", "retime", "undo_edit", "redo_edit", "rollback"})  # commands after which a panel shows the edits afresh
PICK_RADIUS = 0.03  # how near (in view heights) a click must land to a control point to pick it
RETIME_CURVES = {  # remap curves a panel offers by name (see text4d.timing.Retime)
    "Reverse": [[0.0, 1.0], [1.0, 0.0]],
    "Ease in/out": [[0.0, 0.0], [0.25, 0.1], [0.5, 0.5], [0.75, 0.9], [1.0, 1.0]],
}


WEIGHT_HINT = "how firmly edits hold when training resumes: lambda_edit = 10^x; the left end is 0 (the data wins)"


def weight_to_slider(weight: float) -> float:
    """``lambda_edit`` on the panels' log slider (0 to 6): 0 is the slider's left end, else log10 (clamped to the slider)."""
    return 0.0 if weight <= 0 else min(6.0, max(0.25, math.log10(weight)))


def slider_to_weight(value: float) -> float:
    """The ``lambda_edit`` a position of the log slider means (see :func:`weight_to_slider`)."""
    return 0.0 if value <= 0 else 10.0 ** value


def project(points: np.ndarray, c2w: np.ndarray, fovy: float, aspect: float) -> tuple[np.ndarray, np.ndarray]:
    """Screen positions [N, 2] (normalised, see the module docstring) of ``points`` [N, 3], and which lie in front [N]."""
    rotation, eye = np.asarray(c2w)[:3, :3], np.asarray(c2w)[:3, 3]
    local = (np.asarray(points, dtype=np.float64) - eye) @ rotation  # world -> camera: R^T (p - eye), row-wise
    depth = local[:, 2]
    front = depth > 1e-6
    safe = np.where(front, depth, 1.0)
    tan_y = math.tan(fovy / 2.0)
    x = local[:, 0] / safe / (tan_y * aspect)
    y = local[:, 1] / safe / tan_y
    return np.stack([(x + 1.0) / 2.0, (y + 1.0) / 2.0], axis=-1), front


def pick(points: np.ndarray, c2w: np.ndarray, fovy: float, aspect: float, screen: Sequence[float], radius: float = PICK_RADIUS) -> int | None:
    """The control point drawn nearest ``screen`` (a click), if one lies within ``radius`` view heights of it; the nearer to the eye on a tie."""
    uv, front = project(points, c2w, fovy, aspect)
    offset = (uv - np.asarray(screen, dtype=np.float64)) * np.array([aspect, 1.0])  # in view heights
    gap = np.where(front, np.linalg.norm(offset, axis=-1), np.inf)
    best = int(np.argmin(gap)) if len(gap) else -1
    return best if best >= 0 and gap[best] <= radius else None


def in_box(points: np.ndarray, c2w: np.ndarray, fovy: float, aspect: float, lo: Sequence[float], hi: Sequence[float]) -> list[int]:
    """The control points drawn inside the screen rectangle ``lo``..``hi`` (a box selection), in index order."""
    uv, front = project(points, c2w, fovy, aspect)
    inside = front & (uv >= np.asarray(lo)).all(-1) & (uv <= np.asarray(hi)).all(-1)
    return np.flatnonzero(inside).tolist()


def parse_selection(text: str, count: int) -> tuple[int, ...]:
    """Control point indices typed as "3, 7, 10-12"; ``ValueError`` names what is not one of 0..count-1."""
    picked: list[int] = []
    for part in (p.strip() for p in text.replace(";", ",").split(",")):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            first, last = (int(lo), int(hi)) if sep else (int(part), int(part))
        except ValueError:
            raise ValueError(f"'{part}' is not a control point index or a range like 3-7") from None
        if not 0 <= first <= last < count:
            raise ValueError(f"control points '{part}' are not within 0..{count - 1}")
        picked += [i for i in range(first, last + 1) if i not in picked]
    return tuple(picked)


def gizmo_drag(nodes: Sequence[int], t: float, start: Sequence[float] | np.ndarray, position: Sequence[float] | np.ndarray, wxyz: Sequence[float] | np.ndarray,
               radius: float, width: float) -> PoseDrag:
    """The drag a gizmo made: it started at ``start`` with no rotation and is now at ``position`` turned by ``wxyz``.

    The selected nodes turn about where the gizmo started and move with it; the Session checks the values.
    """
    move = [float(p) - float(s) for p, s in zip(position, start)]
    return pose_drag(list(nodes), t, move, [float(q) for q in wxyz], [float(s) for s in start], radius, width)


def offset_drag(nodes: Sequence[int], t: float, centre: Sequence[float], move: Sequence[float], degrees: Sequence[float],
                radius: float, width: float) -> PoseDrag:
    """A drag typed as numbers (the desktop studio): a translation, and rotations about x, y, z (degrees, in that order) about ``centre``."""
    quat = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    for axis, angle in enumerate(degrees):
        half = math.radians(float(angle)) / 2.0
        turn = torch.zeros(4, dtype=torch.float64)
        turn[0], turn[1 + axis] = math.cos(half), math.sin(half)
        quat = multiply(turn, quat)
    return pose_drag(list(nodes), t, [float(m) for m in move], quat.tolist(), [float(c) for c in centre], radius, width)
