"""Row 2: the HexPlane deformation field against DreamGaussian4D's ``scene/hexplane.py`` + ``scene/deformation.py``
(the copy its ``main_4d.py`` trains, ``use_res: True``), and against 4DGaussians' originals (``heads: mlp``).

The originals' weights are copied into ours (:func:`copy_weights`): their planes are sampled at
``-xyz / bound`` (the box is stored max-first) and ours at ``xyz / bound``, so each plane is mirrored
along its space axes; DreamGaussian4D's time for frame ``i`` of ``T`` is ``2 i / T - 1``, ours
``2 t - 1``, so frame ``i`` is queried at ``t = i / T``. Then deformed positions, scales, rotations
and opacities are compared for random Gaussians at every frame.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from report import Report
from shims import on_path
from torch import nn

from text4d.app.animate import KIND as ANIMATE
from text4d.app.runkind import load
from text4d.config import CONFIGS
from text4d.gaussians.deform import DeformConfig, HexPlaneField

ROW = "hexplane"
_PAIRS = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]  # itertools.combinations(range(4), 2), the originals' plane order


def copy_weights(grids: nn.ModuleList, trunk: list[nn.Linear], heads: list[list[nn.Linear]], ours: HexPlaneField) -> None:
    """Load an original's planes (``grids[scale][pair]`` [1, C, *reso]), trunk linears and per-head linears
    (position, scale, rotation; each ``[hidden, out]``) into ``ours``."""
    space, time = [(0, 1), (0, 2), (1, 2)], [(0, 3), (1, 3), (2, 3)]
    with torch.no_grad():
        for s, planes in enumerate(grids):
            assert isinstance(planes, nn.ParameterList)  # one scale's six planes
            for k, pair in enumerate(space):
                ours.space_planes[s][k].copy_(planes[_PAIRS.index(pair)][0].flip(-1, -2))  # both axes are space
            for k, pair in enumerate(time):
                ours.time_planes[s][k].copy_(planes[_PAIRS.index(pair)][0].flip(-1))  # width is space, height time
        own_trunk = [m for m in ours.trunk if isinstance(m, nn.Linear)]
        for a, b in zip(trunk, own_trunk, strict=True):
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)
        w = ours.cfg.width
        hidden, out = ours.heads_hidden[1], ours.heads_out
        assert isinstance(hidden, nn.Linear)  # the heads' hidden layers side by side
        out.weight.zero_()
        start = 0
        for h, (mid, last) in enumerate(heads):
            hidden.weight[h * w : (h + 1) * w].copy_(mid.weight)
            hidden.bias[h * w : (h + 1) * w].copy_(mid.bias)
            n = last.out_features
            out.weight[start : start + n, h * w : (h + 1) * w].copy_(last.weight)
            out.bias[start : start + n].copy_(last.bias)
            start += n


def _perturb(module: nn.Module, seed: int) -> None:
    """Random values everywhere (the originals start their heads at zero: an identity tells nothing)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn(p.shape, generator=g))


def _gaussians(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    xyz = (torch.rand(n, 3, generator=g) * 2 - 1) * 1.8  # some outside the ±1.6 box: border padding
    scales = torch.randn(n, 3, generator=g) - 3
    rots = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)
    opac = torch.randn(n, 1, generator=g)
    return xyz, scales, rots, opac


def run(report: Report, dg4d: Path, fourdgs: Path | None, tiny: bool, device: torch.device, fixtures: dict) -> None:
    from omegaconf import OmegaConf

    for config in ("4d.yaml", "4d_low.yaml"):
        args = OmegaConf.load(dg4d / "configs" / config).deformation
        _dg4d_case(report, dg4d, args, config, device, None)
    small = OmegaConf.load(dg4d / "configs" / "4d.yaml").deformation  # the CI fixture: 4d.yaml's field, narrower
    small.net_width, small.kplanes_config.output_coordinate_dim, small.kplanes_config.resolution = 8, 4, [6, 6, 6, 4]
    _dg4d_case(report, dg4d, small, "4d.yaml reduced", device, fixtures, n=64, T=4)
    if fourdgs is not None:
        _fourdgs_case(report, fourdgs, device, fixtures)


def _fresh_import(root: Path, *names: str):
    """Import ``names`` from ``root`` (DreamGaussian4D and 4DGaussians both have top-level ``scene``/``utils``)."""
    import importlib
    import types

    for key in [k for k in sys.modules if k.split(".")[0] in ("scene", "utils")]:
        del sys.modules[key]
    on_path(root)
    sys.path.remove(str(root.resolve()))
    sys.path.insert(0, str(root.resolve()))
    for package in ("scene", "utils"):  # shim: bare packages, so 4DGaussians' scene/__init__.py (datasets, torchvision) is not run
        mod = types.ModuleType(package)
        mod.__path__ = [str(root / package)]
        sys.modules[package] = mod

    return [importlib.import_module(n) for n in names]


def _dg4d_case(report, dg4d, args, config, device, fixtures, n: int = 300, T: int = 14) -> None:
    row = f"{ROW}/dg4d-{config}"
    (deformation,) = _fresh_import(dg4d, "scene.deformation")
    torch.manual_seed(0)
    ref = deformation.deform_network(args).to(device)
    kp = args.kplanes_config
    cfg = DeformConfig(channels=kp.output_coordinate_dim, resolution=kp.resolution[0], time_resolution=kp.resolution[3],
                       multires=list(args.multires), bound=float(args.bounds), width=args.net_width, depth=args.defor_depth,
                       heads="residual" if args.use_res else "mlp")
    mine = load(ANIMATE, CONFIGS / "dynamic" / config, []).deform if fixtures is None else cfg
    report.compare(row, f"our configs/dynamic/{config} field: channels, resolution, T, multires, bound, width, depth, residual heads",
                   [mine.channels, mine.resolution, mine.time_resolution, *mine.multires, mine.bound, mine.width, mine.depth, mine.heads == "residual"],
                   [cfg.channels, cfg.resolution, cfg.time_resolution, *cfg.multires, cfg.bound, cfg.width, cfg.depth, cfg.heads == "residual"], atol=0, rtol=0)
    ours = HexPlaneField(cfg).to(device)
    report.compare(row, "untrained field: deformed positions equal the canonical ones (zero-started heads)",
                   ours(torch.randn(50, 3, device=device), torch.tensor([0.3], device=device)).position, torch.zeros(1, 50, 3), atol=0, rtol=0)
    _perturb(ref, 1)
    net = ref.deformation_net
    trunk = [m for m in net.feature_out if isinstance(m, nn.Linear)]
    heads = []
    for head in (net.pos_deform, net.scales_deform, net.rotations_deform):
        if args.use_res:  # Head_Res_Net: [Linear_Res(main_stream), Linear]
            heads.append([head.feature_out[0].main_stream, head.feature_out[1]])
        else:  # ReLU, Linear, ReLU, Linear
            heads.append([head[1], head[3]])
    copy_weights(net.grid.grids, trunk, heads, ours)
    xyz, scales, rots, opac = (x.to(device) for x in _gaussians(n, 2))
    with torch.no_grad():
        got_frames, want_frames = [], []
        for i in range(T):
            time = torch.full((n, 1), ((i / T) - 0.5) * 2, device=device)  # gs_renderer_4d.prepare_render
            dx, ds, dr, do = ref(xyz, scales, rots, opac, time)
            d = ours(xyz, torch.tensor([i / T], device=device))
            want_frames.append(torch.cat([xyz + dx, scales + ds, rots + dr, opac], -1))  # gaussian_model_4d.get_deformed_everything
            got_frames.append(torch.cat([xyz + d.position[0], scales + d.log_scale[0], rots + d.rotation[0], opac], -1))
        got, want = torch.stack(got_frames), torch.stack(want_frames)
    tol = dict(atol=1e-6, rtol=3e-5)  # fp32; the plane products and sums run in another order
    report.compare(row, "HexPlane features (planes copied, mirrored)", ours.features(xyz, torch.tensor([3 / T], device=device))[0],
                   net.grid(xyz, torch.full((n, 1), (3 / T - 0.5) * 2, device=device)), **tol)
    for name, sl in (("positions", slice(0, 3)), ("log-scales", slice(3, 6)), ("rotations", slice(6, 10)), ("opacity logits (no_do: unchanged)", slice(10, 11))):
        report.compare(row, f"deformed {name}, {T} frames x {n} Gaussians", got[..., sl], want[..., sl], **tol)
    if fixtures is not None:
        fixtures[f"{ROW}/xyz"], fixtures[f"{ROW}/scales"], fixtures[f"{ROW}/rots"], fixtures[f"{ROW}/opacity"] = (x.cpu() for x in (xyz, scales, rots, opac))
        fixtures[f"{ROW}/deformed"] = want.cpu()
        for name, p in ours.state_dict().items():
            fixtures[f"{ROW}/field.{name}"] = p.cpu()


def _fourdgs_case(report, root, device, fixtures) -> None:
    """4DGaussians' own field (D-NeRF defaults: multires [1, 2], depth 0): ours with ``heads: mlp``."""
    from types import SimpleNamespace

    row = f"{ROW}/4dgaussians"
    (deformation,) = _fresh_import(root, "scene.deformation")
    args = SimpleNamespace(net_width=64, timebase_pe=4, defor_depth=0, posebase_pe=10, scale_rotation_pe=2, opacity_pe=2,
                           timenet_width=64, timenet_output=32, grid_pe=0, bounds=1.6, multires=[1, 2], no_grid=False,
                           empty_voxel=False, static_mlp=False, no_dx=False, no_ds=False, no_dr=False, no_do=False,
                           no_dshs=False, apply_rotation=False,
                           kplanes_config={"grid_dimensions": 2, "input_coordinate_dim": 4, "output_coordinate_dim": 32, "resolution": [64, 64, 64, 25]})
    torch.manual_seed(0)
    ref = deformation.deform_network(args).to(device)
    _perturb(ref, 3)
    cfg = DeformConfig(channels=32, resolution=64, time_resolution=25, multires=[1, 2], bound=1.6, width=64, depth=1, heads="mlp")
    ours = HexPlaneField(cfg).to(device)
    net = ref.deformation_net
    heads = [[h[1], h[3]] for h in (net.pos_deform, net.scales_deform, net.rotations_deform)]
    copy_weights(net.grid.grids, [m for m in net.feature_out if isinstance(m, nn.Linear)], heads, ours)
    n = 300
    xyz, scales, rots, opac = (x.to(device) for x in _gaussians(n, 4))
    shs = torch.zeros(n, 16, 3, device=device)
    tol = dict(atol=1e-6, rtol=3e-5)  # fp32; the plane products and sums run in another order
    with torch.no_grad():
        for t in (0.0, 0.37, 1.0):
            time = torch.full((n, 1), t, device=device)  # 4DGaussians feeds the camera's time in [0, 1] as is
            pts, sc, rot, _, _ = ref(xyz, scales, rots, opac, shs, time)
            d = ours(xyz, torch.tensor([(t + 1) / 2], device=device))  # its time coordinate is t itself: ours 2 t' - 1 = t
            report.compare(row, f"deformed positions at time {t}", xyz + d.position[0], pts, **tol)
            report.compare(row, f"deformed log-scales at time {t}", scales + d.log_scale[0], sc, **tol)
            report.compare(row, f"deformed rotations at time {t}", rots + d.rotation[0], rot, **tol)
