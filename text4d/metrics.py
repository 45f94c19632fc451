"""Image quality measures on held-out views (no learned metrics, no weights).

All take images as [..., H, W, C] in [0, 1] and return one value per image
([...]) so a batch of views x frames is scored in one call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB, per image."""
    mse = (pred - target).square().flatten(-3).mean(-1)
    return -10.0 * torch.log10(mse.clamp_min(1e-10))


def _gaussian_window(size: int, sigma: float, device: torch.device) -> Tensor:
    x = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2.0
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(pred: Tensor, target: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Structural similarity (Wang et al. 2004; Gaussian window 11, sigma 1.5), per image.

    Computed on the valid region (no padding), averaged over channels, as the
    common NeRF evaluation code does.
    """
    batch = pred.shape[:-3]
    h, w, c = pred.shape[-3:]
    x = pred.reshape(-1, h, w, c).permute(0, 3, 1, 2).float()
    y = target.reshape(-1, h, w, c).permute(0, 3, 1, 2).float()
    g = _gaussian_window(window, sigma, x.device)
    kx = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    ky = g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(z: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(z, kx, groups=c), ky, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(-1).reshape(batch)


def mask_iou(pred_alpha: Tensor, target_alpha: Tensor, threshold: float = 0.5) -> Tensor:
    """Intersection over union of the foreground masks (alpha > threshold), per image."""
    a = pred_alpha > threshold
    b = target_alpha > threshold
    inter = (a & b).flatten(-3).sum(-1).float()
    union = (a | b).flatten(-3).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def score(pred_rgb: Tensor, pred_alpha: Tensor, gt_rgb: Tensor, gt_alpha: Tensor) -> dict[str, float]:
    """Mean PSNR, SSIM and mask IoU over a batch of images."""
    return {
        "psnr": psnr(pred_rgb, gt_rgb).mean().item(),
        "ssim": ssim(pred_rgb, gt_rgb).mean().item(),
        "iou": mask_iou(pred_alpha, gt_alpha).mean().item(),
    }
