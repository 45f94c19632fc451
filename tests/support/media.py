"""Tiny input files written by tests: RGBA frame folders."""

from __future__ import annotations

import numpy as np
from PIL import Image


def write_clip(folder, n, size=16, fmt="{}.png", skip=(), rgba=True):
    """``n`` frames of ``size`` px into ``folder`` (frame i: red 10 i, a green square, opaque there when ``rgba``), skipping ``skip``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        if i in skip:
            continue
        img = np.zeros((size, size, 4 if rgba else 3), np.uint8)
        img[..., 0] = 10 * i
        img[4:12, 4:12, 1] = 200
        if rgba:
            img[4:12, 4:12, 3] = 255
        Image.fromarray(img).save(folder / fmt.format(i))
    return folder
