"""What the original repositories need to import and run here, and nothing more.

Each shim is the smallest stand-in for something the originals import or hard-code; docs/parity.md
lists them with what each replaces. None changes what the originals compute on the tensors compared.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch


def on_path(folder: str | Path) -> None:
    """Put a reference checkout first on ``sys.path`` (the originals import their own modules by bare name)."""
    folder = str(Path(folder).resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)


def _module(name: str, **attrs: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    mod.__file__ = f"<parity shim {name}>"
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)  # find_spec() on it must not raise
    return mod


def to_pil_image(pic: torch.Tensor):
    """torchvision's ``to_pil_image`` for the [3, H, W] float tensors DreamGaussian4D passes: ``pic.mul(255).byte()``
    (truncation, as torchvision does), HWC, mode RGB."""
    from PIL import Image

    if pic.ndim != 3 or pic.shape[0] != 3:
        raise ValueError(f"the shim covers [3, H, W] tensors only, got {tuple(pic.shape)}")
    if pic.is_floating_point():
        pic = pic.mul(255).byte()
    return Image.fromarray(pic.permute(1, 2, 0).cpu().numpy(), mode="RGB")


def install_torchvision_shim() -> None:
    """``torchvision.transforms.functional.to_pil_image`` only, unless the real torchvision is installed.

    Nothing else of torchvision is reachable through the shim, so a use the harness does not know of
    fails loudly instead of silently computing something else.
    """
    import diffusers  # noqa: F401  (both probe for torchvision once, at import: let them see the real state)
    import transformers  # noqa: F401

    try:
        import torchvision.transforms.functional  # noqa: F401

        return
    except ImportError:
        pass
    functional = _module("torchvision.transforms.functional", to_pil_image=to_pil_image)
    transforms = _module("torchvision.transforms", functional=functional)
    sys.modules.setdefault("torchvision", _module("torchvision", transforms=transforms))
    sys.modules["torchvision.transforms"] = transforms
    sys.modules["torchvision.transforms.functional"] = functional


class _Rotation:
    """``scipy.spatial.transform.Rotation`` as far as DreamGaussian's ``OrbitCamera.__init__`` uses it
    (``from_matrix`` / ``as_matrix``); only for machines without scipy."""

    def __init__(self, matrix):
        self._m = np.asarray(matrix, dtype=np.float64)

    @classmethod
    def from_matrix(cls, matrix):
        return cls(matrix)

    def as_matrix(self):
        return self._m.copy()


def install_scipy_rotation_shim() -> None:
    """``cam_utils`` imports scipy's Rotation at module level; the compared code never rotates with it."""
    try:
        import scipy.spatial.transform  # noqa: F401
    except ImportError:
        transform = _module("scipy.spatial.transform", Rotation=_Rotation)
        spatial = _module("scipy.spatial", transform=transform)
        sys.modules.update({"scipy": _module("scipy", spatial=spatial), "scipy.spatial": spatial, "scipy.spatial.transform": transform})


def pil_clip_processor(folder: str | Path):
    """The PIL ``CLIPImageProcessor`` the originals ran with (transformers 4.x); transformers 5 picks a
    torchvision backend for ``CLIPImageProcessor`` when torchvision is installed, which resizes differently."""
    try:
        from transformers import CLIPImageProcessorPil
    except ImportError:  # transformers 4.x: CLIPImageProcessor is the PIL one
        from transformers import CLIPImageProcessor

        return CLIPImageProcessor.from_pretrained(str(folder))
    return CLIPImageProcessorPil.from_pretrained(str(folder))


def install_dreamgaussian4d_shims() -> None:
    """Modules ``main_4d.py`` imports but the compared code never calls: background removal (``rembg``),
    OpenCV (``cv2``: only ``load_input``), mesh export (``mesh``, ``grid_put``), and the CUDA Gaussian
    renderer (``gs_renderer_4d``: replaced per run by :class:`RecordingRenderer`)."""
    install_torchvision_shim()
    install_scipy_rotation_shim()
    for name in ("rembg", "cv2", "grid_put", "mesh"):
        sys.modules.setdefault(name, _module(name, mipmap_linear_grid_put_2d=None, Mesh=None, safe_normalize=None))
    sys.modules["gs_renderer_4d"] = _module("gs_renderer_4d", Renderer=RecordingRenderer, MiniCam=MiniCam)


class MiniCam:
    """The fields of DreamGaussian4D's ``MiniCam`` that its training step sets (no projection matrices:
    the recording renderer does not rasterise)."""

    def __init__(self, c2w, width, height, fovy, fovx, znear, zfar, time=0):
        self.c2w = np.asarray(c2w)
        self.image_width, self.image_height = int(width), int(height)
        self.FoVy, self.FoVx, self.znear, self.zfar = fovy, fovx, znear, zfar
        self.time = time


class RecordingRenderer:
    """Stands in for ``gs_renderer_4d.Renderer``: every ``render`` returns a fixed image/alpha leaf
    made by the harness's ``make`` callback, and records the camera, time and background asked for.

    The harness sets ``RecordingRenderer.make`` and reads ``RecordingRenderer.calls`` (the class
    attributes, since ``main_4d`` builds the renderer itself).
    """

    make: Callable[..., tuple[Any, Any]] | None = None
    calls: list[dict[str, Any]] = []

    def __init__(self, opt, sh_degree=0, **_):
        self.opt = opt
        self.gaussians = _Gaussians(sh_degree)

    def initialize(self, *args, **kwargs) -> None:
        pass

    def prepare_render(self) -> None:
        pass

    def render(self, cam, bg_color=None, **_):
        bg = None if bg_color is None else bg_color.detach().cpu().tolist()
        image, alpha = type(self).make(cam, bg)
        type(self).calls.append({"width": cam.image_width, "height": cam.image_height, "time": cam.time,
                                 "bg": bg, "c2w": cam.c2w.copy(), "image": image, "alpha": alpha})
        return {"image": image, "alpha": alpha, "viewspace_points": None, "visibility_filter": None, "radii": None}


class _Gaussians:
    """What ``main_4d``'s training step touches on the Gaussians: learning rates, an optimiser to step."""

    def __init__(self, sh_degree: int):
        self.max_sh_degree = self.active_sh_degree = sh_degree
        self._dummy = torch.nn.Parameter(torch.zeros(1))
        self.optimizer = torch.optim.SGD([self._dummy], lr=0.0)
        self.lr_steps: list[int] = []

    def training_setup(self, opt) -> None:
        pass

    def update_learning_rate(self, step: int) -> None:
        self.lr_steps.append(step)


class _DeviceProxy(types.ModuleType):
    """``torch`` as ``main_4d`` sees it, with its hard-coded ``device="cuda"`` mapped to the harness
    device and ``torch.cuda`` timing events made no-ops on machines without CUDA."""

    def __init__(self, device: torch.device):
        super().__init__("torch")
        self._device = device

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    def tensor(self, *args, device=None, **kwargs):
        if device is not None and str(device).startswith("cuda"):
            device = self._device
        return torch.tensor(*args, device=device, **kwargs)

    @property
    def cuda(self):
        if self._device.type == "cuda":
            return torch.cuda
        return _module("torch.cuda", Event=_NoEvent, synchronize=lambda *a, **k: None, manual_seed=lambda *a: None)


class _NoEvent:
    def __init__(self, **_):
        pass

    def record(self) -> None:
        pass

    def elapsed_time(self, other) -> float:
        return 0.0


@contextlib.contextmanager
def main_4d_on(device: torch.device, module) -> Iterator[None]:
    """Run ``main_4d`` functions with :class:`_DeviceProxy` as their ``torch``."""
    saved = module.torch
    module.torch = _DeviceProxy(device)
    try:
        yield
    finally:
        module.torch = saved
