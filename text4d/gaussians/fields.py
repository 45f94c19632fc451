"""What the dynamic stage needs from a deformation model: one interface for every field.

The stage holds one field (``DynamicStage.field``, chosen by ``deform.model``)
and only ever calls what is declared here:

* :meth:`DeformationField.deform`: canonical Gaussians -> their means,
  quaternions and log-scales at times ``t`` (a model may compose rotations
  rather than add to them, so the field applies its own deltas);
* :meth:`DeformationField.param_groups` / :meth:`DeformationField.learning_rates`:
  the optimiser groups, and their base learning rates read afresh each step
  (the stage zeroes them in the static warm-up and decays them over the
  dynamic phase);
* :meth:`DeformationField.losses`: the model's regularisers, weighted by the
  stage's ``lambda_*`` knobs, named in :attr:`DeformationField.regularisers`;
* :meth:`DeformationField.prepare` / :attr:`DeformationField.ready`: a model
  that is built from the Gaussians themselves (control points sampled from the
  fitted static model) does so at the first dynamic step, and is the identity until then.

A model whose motion people can edit by hand (the control points) is an
:class:`EditableField`: it has nodes to show and drag, and keyframes on top of
what it learned (:mod:`text4d.gaussians.motion_edit`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from text4d.gaussians.motion_edit import MotionEdits, PoseDrag, PoseLayer


class DeformationField(nn.Module, ABC):
    """A time-dependent deformation of canonical Gaussians."""

    #: names of the regularisers :meth:`losses` computes (keys of the stage's weights)
    regularisers: tuple[str, ...] = ()

    @abstractmethod
    def deform(self, means: Tensor, quats: Tensor, log_scales: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Means [T, N, 3], quaternions [T, N, 4] and log-scales [T, N, 3] at times ``t`` [T] in [0, 1]."""

    @abstractmethod
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Optimiser groups by name, in a fixed order (checkpoints store the optimiser by position)."""

    @abstractmethod
    def learning_rates(self, lr_deform: float, lr_grid: float) -> dict[str, float]:
        """Base learning rate of every group of :meth:`param_groups`, from the stage's two knobs and the model's own."""

    def losses(self, weights: dict[str, float], means: Tensor, t: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """Weighted regularisers for the names in :attr:`regularisers` whose weight is > 0.

        ``means`` are the canonical Gaussians, ``t`` this step's times; random
        draws use the CPU ``generator`` so runs replay exactly.
        """
        return {}

    @property
    def ready(self) -> bool:
        """False while the field still has to be built from the Gaussians (it is then the identity)."""
        return True

    def prepare(self, means: Tensor) -> None:
        """Build what depends on the fitted Gaussians (once; a no-op when :attr:`ready`)."""


class EditableField(DeformationField):
    """A deformation field driven by a few nodes a person can drag (see :mod:`text4d.gaussians.motion_edit`).

    Its :meth:`deform` takes an optional ``layer``: a drag being previewed, shown on top of the
    keyframes without becoming one.
    """

    #: the keyframes on top of the learned motion (part of the field's state)
    edits: MotionEdits

    @abstractmethod
    def deform(self, means: Tensor, quats: Tensor, log_scales: Tensor, t: Tensor, layer: PoseLayer | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """As :meth:`DeformationField.deform`, with the keyframes and ``layer`` applied."""

    @abstractmethod
    def node_positions(self, t: float, layer: PoseLayer | None = None) -> Tensor:
        """World positions [M, 3] of the nodes at model time ``t`` (keyframes and ``layer`` applied)."""

    @abstractmethod
    def solve_drag(self, drag: PoseDrag) -> PoseLayer:
        """The keyframe ``drag`` would make (nothing changes); ``ValueError`` names a bad node index."""

    @abstractmethod
    def add_keyframe(self, layer: PoseLayer) -> None:
        """Keep ``layer`` as a keyframe (recording the base motion it should hold against the data)."""

    @abstractmethod
    def edit_loss(self, generator: torch.Generator) -> Tensor:
        """How far the learned motion has drifted from what the keyframes were made on (0 with none)."""


def additive(means: Tensor, quats: Tensor, log_scales: Tensor, position: Tensor, rotation: Tensor, log_scale: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Deltas [T, N, ·] added to the canonical parameters [N, ·] (4DGaussians' and Deformable 3DGS's rule)."""
    return means + position, quats + rotation, log_scales + log_scale
