"""What a Session needs from an optimisation stage.

A stage (static, dynamic, refine, recon) is a resumable optimiser that owns its
parameters and optimiser state and knows nothing about threads, viewers or
files. The :class:`text4d.session.Session` drives it one :meth:`Stage.step` at
a time from its background thread and calls :meth:`Stage.render` for viewers
under the same lock, so a frame never sees half-updated parameters
(nerfview's lesson). Editable knobs are the fields of ``stage.cfg``: a stage
reads them afresh every step, so a change applied between steps takes effect
on the next one.
"""

from __future__ import annotations

import copy
import functools
import operator
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from text4d.gaussians.motion_edit import PoseDrag, PoseLayer
from text4d.io.ply import PlyGaussians
from text4d.render.camera import Cameras
from text4d.render.splat import RenderOutput
from text4d.timing import Retime, clip_frame_times
from text4d.views import Views

Progress = Callable[[int, int], None]  # (done, total) of a long operation on a stage: an export, a mesh extraction


def stepped_resolution(progress: float, milestones: list[float], resolutions: list[int], default: int) -> int:
    """The novel-view render size at training ``progress``: ``resolutions[k]`` once ``k`` milestones
    are passed (DreamGaussian's 128 -> 256 -> 512 at 30 % and 60 %); ``default`` when none are given."""
    if not resolutions:
        return default
    level = sum(progress >= m for m in milestones)
    return resolutions[min(level, len(resolutions) - 1)]


def total_loss(terms: dict[str, Tensor]) -> Tensor:
    """The loss terms added in order: what ``sum(terms.values())`` computes, typed as the Tensor it is (one term at least)."""
    return functools.reduce(operator.add, terms.values())


class Stage(ABC):
    """A resumable optimiser stepped by a Session.

    Attributes:
        name: short stage name shown in the UI ("static", "dynamic", ...).
        cfg: the stage's dataclass config; its fields are the live-editable knobs.
        iteration: number of completed steps.
        num_frames: frames of the clip (1 for a static stage).
    """

    name: str
    cfg: Any
    iteration: int
    num_frames: int

    @property
    @abstractmethod
    def iters(self) -> int:
        """Planned total number of steps (read afresh: a live config edit may change it)."""

    @abstractmethod
    def step(self) -> dict[str, float]:
        """Run one optimisation step; return the loss terms (already weighted) and "loss"."""

    @abstractmethod
    def render(self, cameras: Cameras, t: float | Tensor) -> RenderOutput:
        """Render the current model at normalised time ``t`` (no gradients)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume bit-exactly: parameters, optimiser, RNG, iteration."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (including a changed Gaussian count)."""

    @property
    @abstractmethod
    def num_gaussians(self) -> int:
        """Current number of Gaussians."""

    @abstractmethod
    def remove_gaussians(self, mask: Tensor) -> int:
        """Delete the Gaussians where ``mask`` [N] is True (with their optimiser state); return how many."""

    @abstractmethod
    def gaussian_centers(self, t: float) -> Tensor:
        """World positions [N, 3] of the Gaussians at time ``t``, for crop boxes and viewers."""

    @abstractmethod
    def deformed_raw(self, t: float) -> PlyGaussians:
        """Raw Gaussian parameters at time ``t`` (for ``.ply`` export and client-side splats)."""

    @abstractmethod
    def gaussian_opacities(self) -> Tensor:
        """Activated opacities [N], for pruning by opacity from the UI."""

    def ground_truth(self) -> Views | None:
        """Held-out posed images to compare against, if this stage's data has them."""
        return None

    def clip_times(self) -> list[float]:
        """The model time of every frame of the output clip: what the studios' time slider and every export show.

        The fitted clip's frames by default; a retimed stage (:class:`MotionEditing`) shows what its retime says.
        """
        return clip_frame_times(self.num_frames)

    def evaluate(self) -> dict[str, float]:
        """Held-out metrics (PSNR/SSIM/IoU) when ground truth exists, else {}."""
        return {}

    def status(self) -> str:
        """A line for the viewers' stats panel saying what the stage is doing, beyond the iteration count ("" = nothing)."""
        return ""

    def export_copy(self) -> Stage:
        """A copy that exports read while training goes on.

        Parameters are copied; what training never changes in place (frozen guidance models,
        input images, metric networks) and what exports never read (the optimiser) is shared,
        so an export from the viewer costs the model's size, not the guidance model's.
        """
        return copy.deepcopy(self, {id(x): x for x in self._shared_in_copies() if x is not None})

    def _shared_in_copies(self) -> tuple[Any, ...]:
        """The objects :meth:`export_copy` shares instead of duplicating."""
        return ()


class GaussianStage(Stage):
    """A stage whose model is a :class:`~text4d.gaussians.model.GaussianModel` with a densify strategy.

    Subclasses set ``self.model``, ``self.optimizer``, ``self.strategy`` and
    ``self.device``; the Gaussian-count edits from the viewer are the same for all of them.
    """

    model: Any
    optimizer: Any
    strategy: Any
    device: Any

    @property
    def num_gaussians(self) -> int:
        return self.model.num

    def remove_gaussians(self, mask: Tensor) -> int:
        mask = mask.to(self.device)
        self.model.keep(~mask, self.optimizer)
        self.strategy.reset_stats(self.model.num, self.device)
        return int(mask.sum())

    def gaussian_opacities(self) -> Tensor:
        return self.model.opacities.detach()

    def finish_step(self, terms: dict[str, Tensor], loss: Tensor) -> dict[str, float]:
        """After ``loss.backward()``: Adam step, iteration count, densify schedule; the terms as floats."""
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.iteration += 1
        changed = self.strategy.step(self.model, self.optimizer, self.iteration)
        values = torch.stack([v.detach().float() for v in (*terms.values(), loss)]).tolist()  # one device sync, not one per term
        result = dict(zip([*terms, "loss"], values))
        result.update({f"densify_{k}": float(v) for k, v in changed.items()})
        return result


@dataclass(frozen=True)
class Keyframe:
    """One pose edit as the studios list it."""

    index: int
    t: float  # model time
    width: float  # blend half-width, model time
    nodes: int  # control points it moves


class MotionEditing(ABC):
    """A stage whose output clip can be retimed and, with a deformation model made of control points, posed by hand.

    The Session's motion commands (``edit_pose``, ``edit_remove``, ``retime``, ``undo_edit``,
    ``redo_edit``) and its drag previews go through these methods; see
    :mod:`text4d.gaussians.motion_edit` (keyframes, ARAP drags, the constraint against the data)
    and :class:`text4d.timing.Retime` (trims, loops, speed, holds). What these change is the
    *edit state* (:meth:`edit_state`): the keyframes and the retime, small enough to keep a copy
    per undo step. It is part of :meth:`Stage.state_dict`, so checkpoints and snapshots hold it.
    """

    retiming: Retime

    @abstractmethod
    def render(self, cameras: Cameras, t: float | Tensor, bg: Tensor | None = None, layer: PoseLayer | None = None) -> RenderOutput:
        """Render at model time ``t`` with ``layer`` (a drag being previewed) on top of the keyframes."""

    @abstractmethod
    def why_not_posable(self) -> str | None:
        """None when control points can be dragged now, else why not (a sentence for the user)."""

    @abstractmethod
    def control_points(self, t: float, layer: PoseLayer | None = None) -> Tensor:
        """Node positions [M, 3] at model time ``t`` (keyframes and ``layer`` applied)."""

    @abstractmethod
    def drag_layer(self, drag: PoseDrag) -> PoseLayer:
        """What ``drag`` would do, without doing it (the studio previews it); ``ValueError`` for a bad drag."""

    @abstractmethod
    def add_keyframe(self, drag: PoseDrag) -> PoseLayer:
        """Solve ``drag`` and keep it as a keyframe."""

    @abstractmethod
    def remove_keyframe(self, index: int) -> None:
        """Delete keyframe ``index``; ``ValueError`` when there is none."""

    @abstractmethod
    def keyframes(self) -> list[Keyframe]:
        """The pose edits, oldest first."""

    @abstractmethod
    def retime(self, op: dict) -> None:
        """Apply one retime operation (:class:`text4d.timing.Retime`); ``ValueError`` names a bad value."""

    @abstractmethod
    def edit_state(self) -> dict[str, Any]:
        """A copy of the keyframes and the retime (what one undo step restores)."""

    @abstractmethod
    def load_edit_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`edit_state` returned."""
