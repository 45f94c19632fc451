import math

import numpy as np
import torch
from skimage.metrics import structural_similarity

from text4d.metrics import mask_iou, psnr, ssim


def test_psnr_closed_form():
    a = torch.zeros(2, 8, 8, 3)
    b = torch.full((2, 8, 8, 3), 0.1)
    assert torch.allclose(psnr(a, b), torch.full((2,), 20.0))


def test_ssim_matches_reference_implementation():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, 40, 3, generator=g)
    y = (x + 0.1 * torch.randn(32, 40, 3, generator=g)).clamp(0, 1)
    ours = ssim(x, y).item()
    ref = structural_similarity(x.numpy(), y.numpy(), channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
    assert math.isclose(ours, ref, abs_tol=2e-3), (ours, ref)
    assert math.isclose(ssim(x, x).item(), 1.0, abs_tol=1e-5)


def test_mask_iou():
    a = torch.zeros(1, 4, 4, 1)
    b = torch.zeros(1, 4, 4, 1)
    a[0, :2] = 1  # 8 px
    b[0, 1:3] = 1  # 8 px, overlap 4
    assert math.isclose(mask_iou(a, b).item(), 4 / 12, rel_tol=1e-6)
    assert mask_iou(torch.zeros(1, 4, 4, 1), torch.zeros(1, 4, 4, 1)).item() == 1.0
    assert np.isclose(mask_iou(a, a).item(), 1.0)
