"""Posed images at known times: the one data structure every fitting stage reads.

A driving video is a ``Views`` whose cameras are all the front camera; the
built-in sample's training and held-out views, a D-NeRF split and a
Consistent4D folder are ``Views`` too, so the stages need not know where the
pixels came from.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from text4d.render.camera import Cameras


@dataclass
class Views:
    """M posed images.

    Attributes:
        rgb: colour in [0, 1], straight (not premultiplied).  # [M, H, W, 3]
        alpha: foreground mask in [0, 1].  # [M, H, W, 1]
        cameras: one camera per image, batch shape [M].
        times: normalised time of each image in [0, 1] (see ``text4d.timing``).  # [M]
    """

    rgb: Tensor
    alpha: Tensor
    cameras: Cameras
    times: Tensor

    def __post_init__(self) -> None:
        m = self.rgb.shape[0]
        if self.rgb.ndim != 4 or self.rgb.shape[-1] != 3:
            raise ValueError(f"rgb must be [M,H,W,3], got {tuple(self.rgb.shape)}")
        if self.alpha.shape != (*self.rgb.shape[:3], 1):
            raise ValueError(f"alpha must be [M,H,W,1] matching rgb, got {tuple(self.alpha.shape)}")
        if tuple(self.cameras.batch_shape) != (m,) or tuple(self.times.shape) != (m,):
            raise ValueError(
                f"need one camera and one time per image: {m} images, cameras {tuple(self.cameras.batch_shape)}, times {tuple(self.times.shape)}"
            )
        if (self.cameras.height, self.cameras.width) != tuple(self.rgb.shape[1:3]):
            raise ValueError(f"camera size {self.cameras.width}x{self.cameras.height} != image size {self.rgb.shape[2]}x{self.rgb.shape[1]}")

    def __len__(self) -> int:
        return self.rgb.shape[0]

    @property
    def height(self) -> int:
        return self.rgb.shape[1]

    @property
    def width(self) -> int:
        return self.rgb.shape[2]

    def __getitem__(self, index) -> "Views":
        if isinstance(index, int):
            index = slice(index, index + 1)
        return Views(self.rgb[index], self.alpha[index], self.cameras[index], self.times[index])

    def to(self, device: torch.device | str) -> "Views":
        return Views(self.rgb.to(device), self.alpha.to(device), self.cameras.to(device), self.times.to(device))

    def resized(self, width: int, height: int) -> "Views":
        """The same views at another resolution (images resampled, intrinsics scaled)."""
        return Views(
            resize_images(self.rgb, height, width),
            resize_images(self.alpha, height, width),
            self.cameras.resized(width, height),
            self.times,
        )

    def composite(self, bg: Tensor) -> Tensor:
        """RGB composited over background colour ``bg`` [3]."""
        return self.rgb * self.alpha + bg.to(self.rgb) * (1.0 - self.alpha)

    @staticmethod
    def cat(views: list["Views"]) -> "Views":
        return Views(
            torch.cat([v.rgb for v in views]),
            torch.cat([v.alpha for v in views]),
            Cameras.cat([v.cameras for v in views]),
            torch.cat([v.times for v in views]),
        )


def resize_images(img: Tensor, h: int, w: int) -> Tensor:
    """Resize [..., H, W, C] images: area averaging when shrinking, bilinear when growing."""
    if img.shape[-3:-1] == (h, w):
        return img
    lead = img.shape[:-3]
    x = img.reshape(-1, *img.shape[-3:]).permute(0, 3, 1, 2)
    x = torch.nn.functional.interpolate(x, size=(h, w), mode="area" if x.shape[-1] > w else "bilinear", align_corners=None if x.shape[-1] > w else False)
    return x.permute(0, 2, 3, 1).reshape(*lead, h, w, img.shape[-1])
