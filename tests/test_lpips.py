"""LPIPS from local files: the real key layouts load, the metric behaves, bad files are clear errors, recon logs it."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from rich.console import Console

from text4d.app.recon import ReconRun, fit_scene
from text4d.config import load_config
from text4d.errors import ConfigError, ModelFileError
from text4d.lpips import LPIPS, LpipsConfig, load_lpips
from text4d.recon import build_recon_stage, export_sample_dnerf

# torchvision's alexnet().features convs (key, out, in, k), written out here rather than read off text4d.lpips.
ALEX_CONVS = [("features.0", 64, 3, 11), ("features.3", 192, 64, 5), ("features.6", 384, 192, 3), ("features.8", 256, 384, 3), ("features.10", 256, 256, 3)]
ALEX_LINS = [64, 192, 384, 256, 256]


def random_alex(seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Random (He-scaled) weights in torchvision's checkpoint layout and the lpips package's lin layout.

    The torchvision file also carries ``classifier.*`` (here tiny stand-ins: the real ones are 230 MB), which must be ignored.
    Lin weights are non-negative, as the trained ones are (lpips clamps them).
    """
    g = torch.Generator().manual_seed(seed)
    trunk = {}
    for key, cout, cin, k in ALEX_CONVS:
        trunk[f"{key}.weight"] = torch.randn(cout, cin, k, k, generator=g) * (2.0 / (cin * k * k)) ** 0.5
        trunk[f"{key}.bias"] = 0.1 * torch.randn(cout, generator=g)
    trunk["classifier.1.weight"] = torch.randn(8, 16, generator=g)
    trunk["classifier.1.bias"] = torch.zeros(8)
    lins = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) / c for i, c in enumerate(ALEX_LINS)}
    return trunk, lins


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lpips")
    trunk, lins = random_alex()
    torch.save(trunk, d / "alexnet-owt-7be5be79.pth")
    torch.save(lins, d / "alex.pth")
    return d / "alexnet-owt-7be5be79.pth", d / "alex.pth"


@pytest.fixture(scope="module")
def metric(files):
    return load_lpips(LpipsConfig(backbone=str(files[0]), lin=str(files[1])))


def images(seed: int, n: int = 2, h: int = 48, w: int = 40) -> torch.Tensor:
    return torch.rand(n, h, w, 3, generator=torch.Generator().manual_seed(seed))


# lpips 0.1.4 (with torchvision 0.28) on random_alex(0) and the images of the test below; see its docstring.
REFERENCE = [0.0019402497, 0.0019764507, 0.0019344006]


def test_matches_the_lpips_package(metric):
    """Values from the official ``lpips`` 0.1.4 package (``lpips.LPIPS(net="alex")(x, y, normalize=True)``) with the
    same weights (``random_alex(0)`` copied into torchvision's alexnet and its lin layers) on the same images:
    an implementation independent of this one (lpips + torchvision modules, not installed here)."""
    x = images(1, n=3, h=64, w=72)
    y = (x + 0.15 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    expected = torch.tensor(REFERENCE)
    assert torch.allclose(metric(x, y), expected, rtol=1e-4, atol=1e-6), (metric(x, y).tolist(), REFERENCE)


def test_zero_for_identical_images_symmetric_and_shaped(metric):
    x, y = images(3), images(4)
    assert torch.equal(metric(x, x), torch.zeros(2))
    assert torch.allclose(metric(x, y), metric(y, x), rtol=1e-6)
    batched = torch.stack([x, y])  # [2, 2, H, W, 3] -> [2, 2]
    assert metric(batched, batched.flip(0)).shape == (2, 2)
    # chunking is only a memory knob
    assert torch.allclose(metric(x, y, chunk=1), metric(x, y), rtol=1e-6)


def test_grows_with_noise(metric):
    x = images(5, n=1, h=64, w=64)
    g = torch.Generator().manual_seed(6)
    noise = torch.randn(x.shape, generator=g)
    d = [metric(x, (x + s * noise).clamp(0, 1)).item() for s in (0.0, 0.02, 0.05, 0.1, 0.2, 0.4)]
    assert d[0] == 0.0 and all(a < b for a, b in itertools.pairwise(d)), d


def test_combined_files_load_the_same_network(files, metric, tmp_path):
    trunk, lins = random_alex()
    x, y = images(7), images(8)
    ours = tmp_path / "ours.pth"
    torch.save(metric.state_dict(), ours)  # this module's own state_dict: features.N.* + linK.model.1.weight
    # The lpips package's LPIPS module: net.sliceK.N.*, lin K twice (linK and lins.K), scaling buffers.
    slices = {"0": 1, "3": 2, "6": 3, "8": 4, "10": 5}
    package = {"scaling_layer.shift": torch.zeros(1, 3, 1, 1), "scaling_layer.scale": torch.ones(1, 3, 1, 1)}
    for k, v in trunk.items():
        if k.startswith("features."):
            idx, kind = k.split(".")[1:]
            package[f"net.slice{slices[idx]}.{idx}.{kind}"] = v
    for k, v in lins.items():
        package[k] = package[k.replace("lin", "lins.", 1)] = v
    torch.save(package, tmp_path / "package.pth")
    from safetensors.torch import save_file

    save_file({**{k: v for k, v in trunk.items() if k.startswith("features.")}, **lins}, str(tmp_path / "both.safetensors"))
    for path in (ours, tmp_path / "package.pth", tmp_path / "both.safetensors"):
        other = load_lpips(LpipsConfig(backbone=str(path)))
        assert torch.equal(other(x, y), metric(x, y)), path


def test_not_configured_is_none_and_lin_alone_is_an_error():
    assert load_lpips(LpipsConfig()) is None
    with pytest.raises(ConfigError, match="'lpips.backbone' is empty"):
        load_lpips(LpipsConfig(lin="alex.pth"))


def test_bad_files_name_the_file_and_the_key(files, tmp_path):
    backbone, lin = map(str, files)
    with pytest.raises(ModelFileError, match=r"nosuch\.pth \(config key 'lpips\.backbone'\) does not exist"):
        load_lpips(LpipsConfig(backbone=str(tmp_path / "nosuch.pth"), lin=lin))
    with pytest.raises(ModelFileError, match=r"config key 'lpips\.lin'\) does not exist"):
        load_lpips(LpipsConfig(backbone=backbone, lin=str(tmp_path / "nosuch.pth")))
    with pytest.raises(ModelFileError, match=r"config key 'lpips\.backbone'\) is a folder"):
        load_lpips(LpipsConfig(backbone=str(tmp_path), lin=lin))
    # swapped files
    with pytest.raises(ModelFileError, match="swap"):
        load_lpips(LpipsConfig(backbone=lin, lin=backbone))
    with pytest.raises(ModelFileError, match=r"'lpips\.backbone'.*swap"):
        load_lpips(LpipsConfig(backbone=lin))
    # the trunk alone: the lin layers are missing
    with pytest.raises(ModelFileError, match=r"no LPIPS linear layers .*'lpips\.backbone'.*set 'lpips\.lin'.*alex\.pth"):
        load_lpips(LpipsConfig(backbone=backbone))
    # not a checkpoint at all
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(ModelFileError, match=r"junk\.pth \(config key 'lpips\.lin'\) is not a readable weights file"):
        load_lpips(LpipsConfig(backbone=backbone, lin=str(junk)))
    # the right key names with the wrong shapes (vgg lin layers on the alex trunk), or a key missing
    trunk = random_alex()[0]
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate([64, 128, 256, 512, 512])}, tmp_path / "vgg.pth")
    with pytest.raises(ModelFileError, match=r"vgg\.pth \(config key 'lpips\.lin'\) does not fit LPIPS-alex: wrong shape lin1\.model\.1\.weight \[1, 128, 1, 1\]"):
        load_lpips(LpipsConfig(backbone=backbone, lin=str(tmp_path / "vgg.pth")))
    del trunk["features.8.weight"]
    torch.save(trunk, tmp_path / "partial.pth")
    with pytest.raises(ModelFileError, match=r"partial\.pth \(config key 'lpips\.backbone'\) does not fit LPIPS-alex: missing features\.8\.weight"):
        load_lpips(LpipsConfig(backbone=str(tmp_path / "partial.pth"), lin=lin))
    trunk["features.0.weight"] = torch.zeros(96, 3, 7, 7)
    torch.save(trunk, tmp_path / "other.pth")
    with pytest.raises(ModelFileError, match=r"features\.0\.weight has shape \(96, 3, 7, 7\)"):
        load_lpips(LpipsConfig(backbone=str(tmp_path / "other.pth"), lin=lin))


def test_vgg_trunk_runs():
    metric = LPIPS("vgg")
    x, y = images(9, n=1, h=32, w=32), images(10, n=1, h=32, w=32)
    assert metric(x, x).item() == 0.0 and metric(x, y).isfinite().all()
    assert [k for k in metric.state_dict() if k.endswith(".weight")][:4] == ["features.0.weight", "features.2.weight", "features.5.weight", "features.7.weight"]


# -- in the reconstruction's test evaluation ----------------------------------------------------------
SCENE = {"n_train": 12, "n_val": 0, "n_test": 3, "resolution": 32}
TINY = ["device=cpu", "backend=torch", "init_points=300", "static_iters=2", "iters=2", "batch_size=2", "densify.enabled=false", "hull_resolution=16"]


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    return export_sample_dnerf(tmp_path_factory.mktemp("scene") / "sample", **SCENE)


def test_recon_evaluation_includes_lpips_only_when_configured(scene_dir, files):
    plain = build_recon_stage(load_config(ReconRun, None, [f"data={scene_dir}", *TINY]))
    assert set(plain.evaluate()) == {"psnr", "ssim", "iou"}
    overrides = [f"data={scene_dir}", *TINY, f"lpips.backbone={files[0]}", f"lpips.lin={files[1]}"]
    stage = build_recon_stage(load_config(ReconRun, None, overrides))
    scores = stage.evaluate()
    assert set(scores) == {"psnr", "ssim", "iou", "lpips"} and scores["lpips"] > 0
    assert scores["psnr"] == pytest.approx(plain.evaluate()["psnr"])  # the same stage otherwise
    with pytest.raises(ModelFileError, match="lpips.backbone"):
        build_recon_stage(load_config(ReconRun, None, [f"data={scene_dir}", *TINY, "lpips.backbone=nowhere/alexnet.pth"]))


def test_headless_fit_logs_and_prints_lpips(scene_dir, files, tmp_path, monkeypatch):
    monkeypatch.chdir(files[0].parent)  # relative paths are resolved when the config is loaded
    console = Console(record=True, width=200)
    overrides = [*TINY, f"out={tmp_path}", "session.eval_every=2", "session.log_every=2", f"lpips.backbone={files[0].name}", f"lpips.lin={files[1].name}"]
    run_path = fit_scene(scene_dir, ui="none", overrides=[*overrides, "exports=[]"], console=console)
    records = [json.loads(line) for line in (run_path / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r for r in records if "test_psnr" in r]
    assert evaluated and all("test_lpips" in r and r["test_lpips"] > 0 for r in evaluated)
    assert "LPIPS" in console.export_text()
    assert f"backbone: {files[0]}" in (run_path / "config.yaml").read_text()
