"""The one place where frame indices and normalised time meet.

Time ``t`` is normalised to [0, 1] over the clip: frame 0 is t=0 and the last
frame is t=1 (a single-frame clip sits at t=0). Every module converts through
these helpers so a clip of 14 frames and its 7-frame downsample agree on what
"t=0.5" means.
"""

from __future__ import annotations

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
