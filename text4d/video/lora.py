"""MotionDirector's dual-path LoRA on a UNet3D, built with peft, and its checkpoint formats.

Two paths of adapters sit on disjoint sets of linears:

* **spatial** (appearance): ``attn1`` (self-attention) and ``ff`` linears inside every spatial
  ``Transformer2DModel``; cross-attention is left alone.
* **temporal** (motion): ``attn1``, ``attn2`` and ``ff`` linears inside every
  ``TransformerTemporalModel``, ``transformer_in`` included.

Multi-video training gives every clip its own spatial adapter. The original nests a new injected
layer around the previous ones for every clip, so each step pays for all earlier clips (and the
nesting wraps earlier adapters' own projections too). Here each clip is a named peft adapter on the
same layers and only the active one runs, so a step costs the same whatever the number of clips.

Scaling is ``lora_alpha / r = 1`` as in the original (which adds ``up(down(x))`` unscaled);
``up`` (peft's ``lora_B``) starts at zero so an untrained adapter is the identity, and ``down``
(``lora_A``) from N(0, 1/r) as the original's ``LoraInjectedLinear`` (peft's "gaussian" init). The one
difference: peft applies dropout to the adapter input, the original to its output.

Checkpoint formats:

* ours: ``<checkpoint>/{spatial,temporal}.safetensors`` with keys ``"{i}.{module}.up"`` /
  ``"{i}.{module}.down"`` (``i`` = adapter index, 0 for the temporal path) and metadata naming the
  path, rank and adapter count.
* released MotionDirector: ``<checkpoint>/{spatial,temporal}/lora/<step>_unet.pt``, a plain list of
  fp32 tensors ``[up0, down0, up1, down1, ...]`` in module traversal order, loaded with
  ``torch.load(weights_only=True)`` and checked against the base model before use.
"""

from __future__ import annotations

import logging
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Literal

import torch
from safetensors import safe_open
from safetensors.torch import save

from text4d.errors import InputError
from text4d.io.atomic import atomic_write

if TYPE_CHECKING:  # peft is imported where adapters are made
    from peft.tuners.lora.layer import Linear as LoraLinear

logger = logging.getLogger(__name__)

Path_ = Literal["spatial", "temporal"]
PATHS: tuple[Path_, Path_] = ("spatial", "temporal")
FORMAT = "text4d-motion-lora"

_ANCESTOR = {"spatial": "Transformer2DModel", "temporal": "TransformerTemporalModel"}
_PARTS = {"spatial": {"attn1", "ff"}, "temporal": {"attn1", "attn2", "ff"}}


def target_modules(unet: torch.nn.Module, path: Path_) -> list[str]:
    """Full names of the linears that carry ``path``'s adapters, in module traversal order.

    The order is the one the released checkpoints use: ancestors in ``named_modules`` order, then
    their linears in ``named_modules`` order.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    names = []
    for anc_name, anc in unet.named_modules():
        if type(anc).__name__ != _ANCESTOR[path]:
            continue
        for sub_name, sub in anc.named_modules():
            parts = sub_name.split(".")
            if not _PARTS[path] & set(parts) or "base_layer" in parts or any(p.startswith("lora_") for p in parts):
                continue
            if isinstance(sub, BaseTunerLayer) or type(sub) is torch.nn.Linear:
                names.append(f"{anc_name}.{sub_name}")
    return names


def _base_linear(layer: torch.nn.Module) -> torch.nn.Linear:
    """The plain linear of a target module: itself, or a peft layer's ``base_layer``."""
    base = getattr(layer, "base_layer", layer)
    if not isinstance(base, torch.nn.Linear):
        raise TypeError(f"a LoRA target must be a linear layer, got {type(base).__name__}")
    return base


def _effective_rank(layer: torch.nn.Module, rank: int) -> int:
    """The original clips a rank above the layer's smaller side to that side; so do we."""
    base = _base_linear(layer)
    return min(rank, base.in_features, base.out_features)


def _lora_layer(module: torch.nn.Module) -> LoraLinear:
    """``module`` as the peft LoRA linear that injection made of it."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    if not isinstance(module, LoraLinear):
        raise TypeError(f"expected a peft LoRA linear after injection, got {type(module).__name__}")
    return module


def adapter_weights(layer: LoraLinear, adapter: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(down, up) weights of ``layer``'s ``adapter`` (peft's lora_A and lora_B linears)."""
    down, up = layer.lora_A[adapter], layer.lora_B[adapter]
    if not isinstance(down, torch.nn.Linear) or not isinstance(up, torch.nn.Linear):
        raise TypeError(f"adapter {adapter} of a LoRA linear holds {type(down).__name__}/{type(up).__name__}, not linears")
    return down.weight, up.weight


@dataclass
class DualLoRA:
    """Spatial + temporal LoRA adapters on a UNet3D, switchable and scalable per path.

    ``n_spatial`` spatial adapters (``spatial_0`` ...; one per training clip, or one shared) and
    optionally one temporal adapter. Call :meth:`activate` before each forward pass.
    """

    unet: torch.nn.Module
    rank: int = 32
    dropout: float = 0.1
    n_spatial: int = 1
    temporal: bool = True
    layers: dict[str, dict[str, LoraLinear]] = field(default_factory=dict, init=False)
    current: tuple[int | None, bool, Path_ | None] = field(default=(None, False, None), init=False)
    _applied: dict[str, tuple[str | None, bool]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        if self.rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")
        plan: list[tuple[Path_, str]] = [("spatial", f"spatial_{i}") for i in range(self.n_spatial)]
        if self.temporal:
            plan.append(("temporal", "temporal"))
        for path in PATHS:
            self.layers[path] = {}
        for path, adapter in plan:
            names = target_modules(self.unet, path)
            if not names:
                raise ValueError(f"the UNet has no {path} {_ANCESTOR[path]} linears to adapt")
            modules = dict(self.unet.named_modules())
            pattern = {re.escape(n): _effective_rank(modules[n], self.rank) for n in names
                       if _effective_rank(modules[n], self.rank) != self.rank}
            alpha_pattern = dict(pattern)
            cfg = LoraConfig(r=self.rank, lora_alpha=self.rank, lora_dropout=self.dropout, target_modules=names,
                             rank_pattern=pattern, alpha_pattern=alpha_pattern, init_lora_weights="gaussian")
            with warnings.catch_warnings():  # peft warns that a second adapter joins the first: intended
                warnings.simplefilter("ignore")
                inject_adapter_in_model(cfg, self.unet, adapter_name=adapter)
            modules = dict(self.unet.named_modules())
            self.layers[path] = {n: _lora_layer(modules[n]) for n in names}
        # Adapters train in fp32 even when the frozen base runs in bf16 (autocast does the matmuls).
        for p in self.parameters():
            p.data = p.data.float()
        self.activate(spatial=None, temporal=False)

    # -- switching -----------------------------------------------------------------------------
    def spatial_names(self) -> list[str]:
        return [f"spatial_{i}" for i in range(self.n_spatial)]

    def activate(self, spatial: int | None, temporal: bool, train: Path_ | None = None) -> None:
        """Choose the adapters the next forward pass uses and which path gets gradients.

        ``spatial``: index of the spatial adapter to use, or None for no spatial adapter.
        ``train``: the only path whose (active) adapter requires grad; None freezes both.

        A path's layers are touched only when its adapter, on/off state or trainability changes:
        a training step switches twice, and walking every peft layer each time cost ~35 ms of
        CPU per step, which the GPU then waited for.
        """
        if spatial is not None and not 0 <= spatial < self.n_spatial:
            raise IndexError(f"spatial adapter {spatial} does not exist ({self.n_spatial} trained)")
        if temporal and not self.temporal:
            raise ValueError("this DualLoRA has no temporal adapter")
        self.current = (spatial, temporal, train)
        wanted = {"spatial": f"spatial_{spatial}" if spatial is not None else None,
                  "temporal": "temporal" if temporal else None}
        for path in PATHS:
            name = wanted[path]
            trainable = name is not None and train == path
            if self._applied.get(path) == (name, trainable):
                continue
            for layer in self.layers[path].values():
                if name is None:
                    layer.enable_adapters(False)
                    continue
                if layer.disable_adapters:
                    layer.enable_adapters(True)
                if layer.active_adapters != [name]:
                    layer.set_adapter([name])
                for weight in adapter_weights(layer, name):
                    weight.requires_grad_(trainable)
            self._applied[path] = (name, trainable)

    @contextmanager
    def disabled(self) -> Iterator[None]:
        """Run the bare base model inside the block, then restore the previous activation."""
        previous = self.current
        self.activate(spatial=None, temporal=False)
        try:
            yield
        finally:
            self.activate(*previous)

    def set_scale(self, path: Path_, scale: float) -> None:
        """Scale every adapter of ``path`` (1 = as trained, 0 = off)."""
        for layer in self.layers[path].values():
            for adapter in list(layer.scaling):
                layer.set_scale(adapter, scale)

    # -- parameters and state ------------------------------------------------------------------
    def parameters(self, path: Path_ | None = None, index: int | None = None) -> Iterator[torch.Tensor]:
        """Adapter parameters of ``path`` (all paths if None); ``index`` picks one spatial adapter."""
        for p in PATHS if path is None else (path,):
            names = ["temporal"] if p == "temporal" else (
                self.spatial_names() if index is None else [f"spatial_{index}"])
            for layer in self.layers[p].values():
                for name in names:
                    if name in layer.lora_A:
                        yield from adapter_weights(layer, name)

    def state(self, path: Path_) -> dict[str, torch.Tensor]:
        """Adapter weights of ``path`` in our file layout (``"{i}.{module}.up|down"``)."""
        out = {}
        names = self.spatial_names() if path == "spatial" else (["temporal"] if self.temporal else [])
        for i, adapter in enumerate(names):
            for mod, layer in self.layers[path].items():
                down, up = adapter_weights(layer, adapter)
                out[f"{i}.{mod}.up"] = up.detach().float().cpu().contiguous()
                out[f"{i}.{mod}.down"] = down.detach().float().cpu().contiguous()
        return out

    def load_state(self, path: Path_, tensors: dict[str, torch.Tensor], source: str = "") -> None:
        """Copy weights from :meth:`state`'s layout into the adapters, checking names and shapes."""
        names = self.spatial_names() if path == "spatial" else ["temporal"]
        expected = {f"{i}.{m}.{k}" for i in range(len(names)) for m in self.layers[path] for k in ("up", "down")}
        if set(tensors) != expected:
            missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
            raise InputError(
                f"{path} adapter weights {source} do not fit this base model: "
                f"{len(missing)} missing (e.g. {missing[:2]}), {len(extra)} unexpected (e.g. {extra[:2]})"
            )
        with torch.no_grad():
            for i, adapter in enumerate(names):
                for mod, layer in self.layers[path].items():
                    down, up = adapter_weights(layer, adapter)
                    for key, w in (("up", up), ("down", down)):
                        t = tensors[f"{i}.{mod}.{key}"]
                        if t.shape != w.shape:
                            raise InputError(
                                f"{path} adapter weight {i}.{mod}.{key} in {source} has shape {tuple(t.shape)}, "
                                f"the base model needs {tuple(w.shape)} (rank {self.rank}); was it trained on "
                                "another base model or rank?"
                            )
                        w.copy_(t)

    @contextmanager
    def merged(self, spatial: int | None, temporal: bool) -> Iterator[None]:
        """Fold the chosen adapters into the base weights for fast inference, undone on exit.

        Unmerging subtracts the same product again, so it is exact in fp32 and off by rounding in
        bf16/fp16: use it for one-shot generation, not inside a training run.
        """
        self.activate(spatial=spatial, temporal=temporal)
        chosen = []
        for path, on, name in (("spatial", spatial is not None, f"spatial_{spatial}"), ("temporal", temporal, "temporal")):
            if on:
                for layer in self.layers[path].values():
                    layer.merge(adapter_names=[name])
                    chosen.append(layer)
        try:
            yield
        finally:
            for layer in chosen:
                layer.unmerge()


# -- files --------------------------------------------------------------------------------------
@dataclass
class AdapterFile:
    """One path's adapter weights read from disk, in our layout, with the rank and adapter count."""

    path: Path_
    rank: int
    count: int
    tensors: dict[str, torch.Tensor]
    source: str


def save_adapter_file(lora: DualLoRA, path: Path_, file: str | Path) -> Path:
    """Write ``path``'s adapters to ``file`` (safetensors, atomically)."""
    tensors = lora.state(path)
    count = lora.n_spatial if path == "spatial" else 1
    meta = {"format": FORMAT, "version": "1", "path": path, "rank": str(lora.rank), "count": str(count)}
    with atomic_write(file) as f:
        f.write(save(tensors, metadata=meta))
    return Path(file)


def read_adapter_file(file: str | Path) -> AdapterFile:
    """Read one of our ``.safetensors`` adapter files."""
    file = Path(file)
    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, ValueError, RuntimeError) as e:
        raise InputError(f"cannot read adapter file {file}: {e}") from e
    if meta.get("format") != FORMAT or meta.get("path") not in PATHS:
        raise InputError(f"{file} is not a text4d motion adapter file (metadata {meta}); convert released "
                         "MotionDirector checkpoints with `text4d motion convert`")
    return AdapterFile(path=meta["path"], rank=int(meta["rank"]), count=int(meta["count"]), tensors=tensors,
                       source=str(file))


def read_released_pt(file: str | Path) -> list[torch.Tensor]:
    """Load a released ``<step>_unet.pt``: a plain list of tensors (never unpickles code)."""
    file = Path(file)
    try:
        obj = torch.load(str(file), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        raise InputError(f"cannot read MotionDirector checkpoint {file}: {e}") from e
    if not isinstance(obj, (list, tuple)) or not all(isinstance(t, torch.Tensor) for t in obj):
        raise InputError(f"{file} is not a MotionDirector LoRA checkpoint (expected a list of tensors, "
                         f"got {type(obj).__name__})")
    return list(obj)


def released_to_adapter(tensors: list[torch.Tensor], unet: torch.nn.Module, path: Path_, source: str) -> AdapterFile:
    """Map a released ``[up0, down0, up1, ...]`` list onto ``path``'s modules, validating count and shapes."""
    names = target_modules(unet, path)
    modules = dict(unet.named_modules())
    n = len(tensors)
    if n != 2 * len(names):
        hint = ""
        if path == "spatial" and n > 2 * len(names) and n % (2 * len(names)) == 0:
            hint = (" It looks like a multi-clip spatial checkpoint, where the original nests one adapter per "
                    "clip inside the previous ones; only its temporal path can be used.")
        raise InputError(
            f"{source} holds {n} tensors but the base model's {path} path has {len(names)} adapted linears "
            f"(needs {2 * len(names)}: up and down for each); was it trained on another base model?{hint}"
        )
    # Layers narrower than the rank were clipped to their width, so the rank is the largest one seen.
    rank = max(int(t.shape[0]) if t.ndim == 2 else -1 for t in tensors[1::2])
    out = {}
    for k, name in enumerate(names):
        up, down = tensors[2 * k], tensors[2 * k + 1]
        base = _base_linear(modules[name])
        r = _effective_rank(base, rank)
        if tuple(up.shape) != (base.out_features, r) or tuple(down.shape) != (r, base.in_features):
            raise InputError(
                f"{source}: tensors {2 * k}/{2 * k + 1} have shapes {tuple(up.shape)}/{tuple(down.shape)} but "
                f"{name} needs up {(base.out_features, r)} and down {(r, base.in_features)} (rank {rank}); "
                "the checkpoint does not fit this base model"
            )
        out[f"0.{name}.up"] = up.float()
        out[f"0.{name}.down"] = down.float()
    return AdapterFile(path=path, rank=rank, count=1, tensors=out, source=source)


def _released_file(folder: Path) -> Path | None:
    files = sorted(folder.glob("*unet*.pt")) + sorted(folder.glob("*unet*.pth"))
    return files[0] if files else None


def find_adapter(location: str | Path, path: Path_, bare: bool = False) -> Path | None:
    """Locate ``path``'s weights under a checkpoint folder (ours or released layout).

    With ``bare`` (the ``--spatial``/``--temporal`` flags name one path explicitly) ``location``
    may also be the weights file itself or a released ``.../lora`` folder.
    """
    loc = Path(location).expanduser()
    if bare and loc.is_file():
        return loc
    if (loc / f"{path}.safetensors").is_file():
        return loc / f"{path}.safetensors"
    for folder in [loc / path / "lora"] + ([loc] if bare else []):
        if folder.is_dir() and (f := _released_file(folder)) is not None:
            return f
    return None


def resolve_checkpoint(location: str | Path, index: int | None = None, key: str = "--checkpoint") -> Path:
    """A checkpoint folder from a checkpoint folder itself or a run folder (+ step ``index``).

    With a run folder and no ``index`` the latest ``checkpoint-<step>`` is used, as the original
    picks ``checkpoint-<checkpoint_index>``.
    """
    loc = Path(location).expanduser()
    if not loc.exists():
        raise InputError(f"checkpoint {loc} (from {key}) does not exist")
    if loc.is_file():
        return loc
    steps = {}
    for d in loc.glob("checkpoint-*"):
        suffix = d.name.split("-", 1)[1]
        if d.is_dir() and suffix.isdigit():
            steps[int(suffix)] = d
    if index is not None:
        if index not in steps:
            raise InputError(f"{loc} has no checkpoint-{index} (from --checkpoint-index); "
                             f"available steps: {sorted(steps) or 'none'}")
        return steps[index]
    if steps and find_adapter(loc, "temporal") is None and find_adapter(loc, "spatial") is None:
        return steps[max(steps)]
    return loc


def read_adapter(location: str | Path, path: Path_, unet: torch.nn.Module, bare: bool = False) -> AdapterFile | None:
    """Read ``path``'s adapter from ``location`` in either format (released lists validated on ``unet``)."""
    file = find_adapter(location, path, bare=bare)
    if file is None:
        return None
    if file.suffix == ".safetensors":
        ad = read_adapter_file(file)
        if ad.path != path:
            raise InputError(f"{file} holds {ad.path} adapters, not {path}")
        return ad
    return released_to_adapter(read_released_pt(file), unet, path, str(file))


def convert_released(checkpoint: str | Path, unet: torch.nn.Module, out_dir: str | Path) -> list[Path]:
    """Convert a released MotionDirector checkpoint folder into our safetensors files in ``out_dir``."""
    written = []
    for path in PATHS:
        file = find_adapter(checkpoint, path)
        if file is None or file.suffix == ".safetensors":
            continue
        ad = released_to_adapter(read_released_pt(file), unet, path, str(file))
        lora = DualLoRA(unet, rank=ad.rank, dropout=0.0, n_spatial=1 if path == "spatial" else 0,
                        temporal=path == "temporal")
        lora.load_state(path, ad.tensors, ad.source)
        written.append(save_adapter_file(lora, path, Path(out_dir) / f"{path}.safetensors"))
        remove_adapters(unet)
    if not written:
        raise InputError(f"{checkpoint} holds no released MotionDirector weights "
                         "(expected spatial/lora/<step>_unet.pt or temporal/lora/<step>_unet.pt)")
    return written


def remove_adapters(unet: torch.nn.Module) -> None:
    """Put the plain linears back, dropping every adapter (each conversion or benchmark starts bare)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(unet.named_modules()):
        if isinstance(module, BaseTunerLayer):
            parent_name, _, child = name.rpartition(".")
            parent = unet.get_submodule(parent_name) if parent_name else unet
            setattr(parent, child, module.get_base_layer())
