"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", v0.1).

A learned perceptual distance between images, written in plain torch (no
torchvision) and loaded only from local files; nothing is ever downloaded.
Two trunks, as the ``lpips`` package calls them:

- ``alex``: torchvision's ``alexnet().features``, taps after the ReLUs at
  indices 1, 4, 7, 9, 11 (64, 192, 384, 256, 256 channels);
- ``vgg``: torchvision's ``vgg16().features``, taps after relu1_2, relu2_2,
  relu3_3, relu4_3, relu5_3 (indices 3, 8, 15, 22, 29; 64, 128, 256, 512, 512).

The distance, per image pair: map [0, 1] to [-1, 1], apply lpips' scaling
layer (shift ``[-.030, -.088, -.188]``, scale ``[.458, .448, .450]``), run both
images through the trunk, unit-normalise each tap over channels, square the
difference, weight channels with the 1x1 "lin" layer of that tap, average over
space and sum over the five taps.

Weights (see :class:`LpipsConfig`):

- the trunk: torchvision's ImageNet checkpoint as its model zoo stores it
  (``alexnet-owt-7be5be79.pth`` or ``vgg16-397923af.pth``; keys
  ``features.N.weight/bias``, ``classifier.*`` ignored);
- the lin layers: the ``lpips`` package's ``lpips/weights/v0.1/alex.pth`` (or
  ``vgg.pth``; keys ``lin0.model.1.weight`` ... ``lin4.model.1.weight``, each
  ``[1, C, 1, 1]``);
- or one combined file with both key sets, e.g. ``torch.save(LPIPS(...).state_dict())``
  of this module, or of the ``lpips`` package's ``LPIPS`` module (its
  ``net.sliceK.N.*`` trunk keys are understood).

``.pth``/``.pt``/``.bin`` files are read with ``torch.load(weights_only=True)``
onto the CPU (the lpips package's files hold CUDA tensors), ``.safetensors``
with safetensors. The trunk (alex or vgg) is read off the checkpoint's shapes.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from text4d.errors import ConfigError, ModelFileError

log = logging.getLogger(__name__)

# lpips' ScalingLayer: inputs in [-1, 1] are shifted and scaled towards ImageNet statistics.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10  # lpips.normalize_tensor: x / (||x|| + eps)


@dataclass(frozen=True)
class Trunk:
    """One backbone: torchvision's ``features`` layer list (``None`` = max-pool, ``(cin, cout, k, stride, pad)`` = conv + ReLU)."""

    convs: tuple[tuple[int, int, int, int, int] | None, ...]
    pool: int  # max-pool kernel (stride 2)
    taps: tuple[int, ...]  # indices in ``features`` whose outputs (post-ReLU) are compared
    channels: tuple[int, ...]
    backbone_file: str  # torchvision's model-zoo name, for messages
    lin_file: str  # the lpips package's name, for messages


def _vgg16() -> tuple[tuple[int, int, int, int, int] | None, ...]:
    layers: list[tuple[int, int, int, int, int] | None] = []
    cin = 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512):
        if v == "M":
            layers.append(None)
        else:
            layers.append((cin, int(v), 3, 1, 1))
            cin = int(v)
    return tuple(layers)


TRUNKS: dict[str, Trunk] = {
    "alex": Trunk(
        convs=((3, 64, 11, 4, 2), None, (64, 192, 5, 1, 2), None, (192, 384, 3, 1, 1), (384, 256, 3, 1, 1), (256, 256, 3, 1, 1)),
        pool=3,
        taps=(1, 4, 7, 9, 11),
        channels=(64, 192, 384, 256, 256),
        backbone_file="alexnet-owt-7be5be79.pth",
        lin_file="alex.pth",
    ),
    "vgg": Trunk(convs=_vgg16(), pool=2, taps=(3, 8, 15, 22, 29), channels=(64, 128, 256, 512, 512), backbone_file="vgg16-397923af.pth", lin_file="vgg.pth"),
}


def _features(trunk: Trunk) -> nn.Sequential:
    """torchvision's ``features`` up to the last tap, with the same indices (so the same state_dict keys)."""
    layers: list[nn.Module] = []
    for spec in trunk.convs:
        if spec is None:
            layers.append(nn.MaxPool2d(kernel_size=trunk.pool, stride=2))
        else:
            cin, cout, k, stride, pad = spec
            layers += [nn.Conv2d(cin, cout, k, stride=stride, padding=pad), nn.ReLU()]
    assert len(layers) == trunk.taps[-1] + 1, (len(layers), trunk.taps)
    return nn.Sequential(*layers)


class _Lin(nn.Module):
    """lpips' ``NetLinLayer``: (dropout, 1x1 conv C -> 1 without bias); key ``model.1.weight``. No dropout at evaluation."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class LPIPS(nn.Module):
    """LPIPS v0.1 with the ``alex`` or ``vgg`` trunk; state_dict keys ``features.N.*`` and ``linK.model.1.weight``.

    Build it with :func:`load_lpips` (local weight files); a bare ``LPIPS(net)``
    has random weights (tests use that).

    Example::

        metric = load_lpips(LpipsConfig(backbone="models/alexnet-owt-7be5be79.pth", lin="models/alex.pth"), device="cuda")
        d = metric(pred, target)  # [..., H, W, 3] in [0, 1] -> [...]
    """

    shift: Tensor  # buffers (register_buffer): declared for the type checker, which cannot see them
    scale: Tensor

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in TRUNKS:
            raise ValueError(f"net must be one of {sorted(TRUNKS)}, got {net!r}")
        self.net = net
        self.trunk = TRUNKS[net]
        self.features = _features(self.trunk)
        for k, c in enumerate(self.trunk.channels):
            self.add_module(f"lin{k}", _Lin(c))
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @property
    def lins(self) -> list[_Lin]:
        return [getattr(self, f"lin{k}") for k in range(len(self.trunk.taps))]

    @torch.no_grad()
    def distance(self, x: Tensor, y: Tensor) -> Tensor:
        """LPIPS between image batches ``x``, ``y`` [B, 3, H, W] in [0, 1] -> [B].

        Both go through the trunk as one batch; each tap is reduced to its
        distance as soon as it is computed, so only one layer's activations
        are alive at a time.
        """
        b = x.shape[0]
        h = torch.cat([x, y]).float() * 2.0 - 1.0
        h = (h - self.shift) / self.scale
        total = torch.zeros(b, device=x.device)
        lin_at = dict(zip(self.trunk.taps, self.lins))
        for i, layer in enumerate(self.features):
            h = layer(h)
            lin = lin_at.get(i)
            if lin is not None:
                f = h / (h.square().sum(1, keepdim=True).sqrt() + EPS)
                total += lin((f[:b] - f[b:]).square()).mean((1, 2, 3))
        return total

    @torch.no_grad()
    def forward(self, pred: Tensor, target: Tensor, chunk: int | None = None) -> Tensor:
        """LPIPS per image: ``pred``, ``target`` [..., H, W, 3] in [0, 1] -> [...], as :mod:`text4d.metrics`.

        Image pairs go through the trunk ``chunk`` at a time (default: as
        many as fit a budget of about four 800x800 pairs for ``alex``, one for
        ``vgg``), so full-resolution D-NeRF test views fit in memory.
        """
        if pred.shape != target.shape or pred.shape[-1] != 3:
            raise ValueError(f"LPIPS needs two image batches of the same shape [..., H, W, 3], got {tuple(pred.shape)} and {tuple(target.shape)}")
        batch = pred.shape[:-3]
        h, w = pred.shape[-3:-1]
        x = pred.reshape(-1, h, w, 3).permute(0, 3, 1, 2)
        y = target.reshape(-1, h, w, 3).permute(0, 3, 1, 2)
        if chunk is None:
            budget = (4 if self.net == "alex" else 1) * 800 * 800
            chunk = max(1, budget // (h * w))
        parts = [self.distance(x[i : i + chunk], y[i : i + chunk]) for i in range(0, x.shape[0], chunk)]
        out = torch.cat(parts) if parts else x.new_zeros(0)
        return out.reshape(batch)


# -- configuration and loading -----------------------------------------------------------------
@dataclass
class LpipsConfig:
    """LPIPS on the test split, from local files (never downloaded); empty ``backbone`` = no LPIPS.

    Either two files, as they come:

    - ``backbone``: torchvision's ImageNet checkpoint of the trunk,
      ``alexnet-owt-7be5be79.pth`` (the common "alex" LPIPS) or
      ``vgg16-397923af.pth`` (torch hub keeps them in
      ``~/.cache/torch/hub/checkpoints/``); the trunk is read off its shapes;
    - ``lin``: the lpips package's linear layers for that trunk,
      ``lpips/weights/v0.1/alex.pth`` or ``vgg.pth`` (inside the installed
      ``lpips`` package, or its GitHub repository);

    or one combined file in ``backbone`` (with ``lin`` empty) holding both key
    sets, e.g. ``torch.save(lpips.LPIPS(net="alex").state_dict(), "lpips_alex.pth")``.
    """

    backbone: str = field(default="", metadata={"help": "trunk checkpoint (alexnet-owt-7be5be79.pth / vgg16-397923af.pth) or one combined LPIPS file; empty = no LPIPS"})
    lin: str = field(default="", metadata={"help": "lpips v0.1 linear layers (lpips/weights/v0.1/alex.pth or vgg.pth); empty when backbone is a combined file"})


_SLICE = re.compile(r"^net\.slice\d+\.(\d+)\.(weight|bias)$")  # the lpips package's own module: net.slice2.3.weight
_LIN = re.compile(r"^lin(\d+)\.model\.1\.weight$")


def _read(path: str, key: str) -> dict[str, Tensor]:
    """A state dict from ``path`` (``.safetensors`` or a torch pickle), or a :class:`ModelFileError` naming file and key."""
    p = Path(path).expanduser()
    if not p.is_file():
        what = "is a folder; give the weights file inside it" if p.is_dir() else "does not exist; give the path of a local weights file (nothing is downloaded)"
        raise ModelFileError(f"{p} (config key '{key}') {what}")
    state: object
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p), device="cpu")
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated file, a pickled model instead of a state dict, not a checkpoint at all
        # (torch's own message for weights_only failures suggests weights_only=False: not advice to pass on)
        raise ModelFileError(f"{p} (config key '{key}') is not a readable weights file ({type(e).__name__}); expected a state dict saved with "
                             "torch.save(model.state_dict()) or safetensors, not a whole pickled model") from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ModelFileError(f"{p} (config key '{key}') does not hold a state dict of tensors (got {type(state).__name__})")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _split(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(trunk keys as ``features.N.*``, lin keys as ``linK.model.1.weight``); everything else is ignored."""
    trunk, lins = {}, {}
    for k, v in state.items():
        m = _SLICE.match(k)
        if k.startswith("features."):
            trunk[k] = v
        elif m:
            trunk[f"features.{m.group(1)}.{m.group(2)}"] = v
        elif _LIN.match(k):
            lins[k] = v
    return trunk, lins


def _infer_net(trunk: dict[str, Tensor], path: str, key: str) -> str:
    first = trunk.get("features.0.weight")
    for name, spec in TRUNKS.items():
        conv = spec.convs[0]  # every trunk starts with a conv
        if conv is not None and first is not None and tuple(first.shape) == (conv[1], conv[0], conv[2], conv[2]):  # [cout, cin, k, k]
            return name
    shape = tuple(first.shape) if first is not None else None
    raise ModelFileError(
        f"{path} (config key '{key}'): features.0.weight has shape {shape}; expected [64, 3, 11, 11] (torchvision alexnet, "
        f"{TRUNKS['alex'].backbone_file}) or [64, 3, 3, 3] (vgg16, {TRUNKS['vgg'].backbone_file})"
    )


def _check(model: LPIPS, state: dict[str, Tensor], prefix: str, source: dict[str, str]) -> None:
    """Every key of ``model`` starting with ``prefix`` is present in ``state`` with the right shape."""
    expected = {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}
    missing = [k for k in expected if k not in state]
    wrong = [f"{k} {list(state[k].shape)} (expected {list(v.shape)})" for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or wrong:
        path, key = source["path"], source["key"]
        problems = "; ".join(([f"missing {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}"] if missing else [])
                             + ([f"wrong shape {', '.join(wrong[:3])}"] if wrong else []))
        raise ModelFileError(f"{path} (config key '{key}') does not fit LPIPS-{model.net}: {problems}; {source['hint']}")


def load_lpips(cfg: LpipsConfig, device: torch.device | str = "cpu", key: str = "lpips") -> LPIPS | None:
    """The LPIPS network from ``cfg``'s local files on ``device``, or ``None`` when ``cfg.backbone`` is empty.

    ``key`` is where ``cfg`` sits in the run's config, for messages: a
    missing, unreadable or mismatched file is a :class:`ModelFileError` naming
    the file and the key (``lpips.backbone`` / ``lpips.lin``).
    """
    bkey, lkey = f"{key}.backbone", f"{key}.lin"
    if not cfg.backbone:
        if cfg.lin:
            raise ConfigError(f"config key '{lkey}' is set but '{bkey}' is empty; LPIPS needs the trunk too ({TRUNKS['alex'].backbone_file} or {TRUNKS['vgg'].backbone_file})")
        return None
    trunk, lins = _split(_read(cfg.backbone, bkey))
    lin_source = {"path": cfg.backbone, "key": bkey}
    if cfg.lin:
        lin_trunk, lins_from_file = _split(_read(cfg.lin, lkey))
        if lin_trunk and not lins_from_file:
            raise ModelFileError(f"{cfg.lin} (config key '{lkey}') holds trunk weights (features.N.*), not LPIPS linear layers; did you swap '{bkey}' and '{lkey}'?")
        lins, lin_source = lins_from_file, {"path": cfg.lin, "key": lkey}
    if not trunk:
        swapped = f"; it holds LPIPS linear layers (lin0.model.1.weight ...): did you swap '{bkey}' and '{lkey}'?" if lins and not cfg.lin else ""
        raise ModelFileError(
            f"{cfg.backbone} (config key '{bkey}') holds no trunk weights (features.N.weight keys of torchvision's "
            f"{TRUNKS['alex'].backbone_file} / {TRUNKS['vgg'].backbone_file}, or net.sliceK.N.weight of an lpips module){swapped}"
        )
    net = _infer_net(trunk, cfg.backbone, bkey)
    spec = TRUNKS[net]
    if not lins:
        raise ModelFileError(
            f"no LPIPS linear layers (lin0.model.1.weight ... lin4.model.1.weight) in {lin_source['path']} (config key '{lin_source['key']}'); "
            f"set '{lkey}' to the lpips package's lpips/weights/v0.1/{spec.lin_file}"
        )
    model = LPIPS(net)
    _check(model, trunk, "features.", {"path": cfg.backbone, "key": bkey, "hint": f"expected torchvision's {net} checkpoint ({spec.backbone_file})"})
    _check(model, lins, "lin", {**lin_source, "hint": f"expected the lpips v0.1 linear layers for the {net} trunk ({spec.lin_file})"})
    merged = {**trunk, **lins}
    model.load_state_dict({k: merged[k] for k in model.state_dict()})
    log.info("LPIPS-%s from %s%s", net, cfg.backbone, f" + {cfg.lin}" if cfg.lin else "")
    return model.to(device)
