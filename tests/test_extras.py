"""A command whose optional extra is missing stops with one line naming the extra and its install command.

Each case runs the real console entry point in a fresh interpreter where the extra's modules
cannot be imported (``sys.modules[name] = None`` makes ``import name`` fail as if it were absent).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from text4d.extras import EXTRAS, MissingExtra, missing_extra, require, user_error
from text4d.render.splat import resolve_backend

ROOT = Path(__file__).resolve().parents[1]
RUN_BLOCKED = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None
sys.argv = ["text4d", *sys.argv[2:]]
import cli
cli.main()
"""


def run_without(extra: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    modules = next(e for e in EXTRAS if e.name == extra).modules
    return subprocess.run([sys.executable, "-c", RUN_BLOCKED, ",".join(modules), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "TEXT4D_CACHE": str(cwd / "cache")})


@pytest.fixture
def image(tmp_path: Path) -> Path:
    import imageio.v3 as iio

    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[8:24, 8:24] = 255
    iio.imwrite(tmp_path / "img.png", rgba)
    return tmp_path / "img.png"


def commands(image: Path) -> list[tuple[str, list[str]]]:
    return [
        ("video", ["static", "--image", str(image), "--zero123", str(image.parent), "--ui", "none"]),
        ("video", ["motion", "generate", "--model", str(image.parent), "--prompt", "a fox"]),
        ("video", ["video", "from-image", str(image), "--svd", str(image.parent)]),
        ("mesh", ["export", str(image.parent), "--format", "glb"]),
        ("splat", ["export", str(image.parent), "--format", "spz-seq"]),
        ("viewer", ["demo", "--ui", "viser"]),
        ("dpg", ["demo", "--ui", "dpg"]),
        ("batch", ["batch", str(image)]),
    ]


@pytest.mark.parametrize("case", range(8), ids=["static-zero123", "motion-generate", "video-from-image", "export-glb", "export-spz", "demo-viser", "demo-dpg", "batch"])
def test_missing_extra_is_one_line_with_the_install_command(case: int, image: Path, tmp_path: Path) -> None:
    extra, args = commands(image)[case]
    res = run_without(extra, *args, cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip() and not line.startswith(("INFO ", "[transformers]"))]
    assert lines == [lines[-1]] and "Traceback" not in res.stderr, res.stderr
    assert f"the '{extra}' extra is not installed" in lines[-1] and f"pip install -e '.[{extra}]'" in lines[-1], lines
    assert not (tmp_path / "recordings").exists() or not any((tmp_path / "recordings").iterdir()), "a failed command left a run folder"


def test_every_extra_maps_its_modules() -> None:
    names = {e.name for e in EXTRAS}
    assert names == {"viewer", "mesh", "splat", "video", "dpg", "batch", "matting", "cuda"}
    for extra in EXTRAS:
        for module in extra.modules:
            err = missing_extra(ModuleNotFoundError(f"No module named '{module}'", name=f"{module}.sub"))
            assert isinstance(err, MissingExtra) and err.extra is extra
    other = ModuleNotFoundError("No module named 'numpyy'", name="numpyy")
    assert missing_extra(other) is None and user_error(other) is other


def test_require_names_the_missing_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtra, match=r"'matting' extra .*no module onnxruntime"):
        require("matting")


def test_matting_without_onnxruntime(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from text4d.video.matting import onnx_alpha

    model = tmp_path / "seg.onnx"
    model.write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtra, match=r"pip install -e '\.\[matting\]'"):
        onnx_alpha(np.zeros((1, 8, 8, 3), np.float32), model)


def test_gsplat_backend_without_the_cuda_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from text4d.render import splat

    monkeypatch.setitem(sys.modules, "gsplat", None)
    splat.backend_load_error.cache_clear()
    try:
        with pytest.raises(MissingExtra, match=r"'cuda' extra"):
            resolve_backend("gsplat", torch.device("cuda"))
    finally:
        splat.backend_load_error.cache_clear()
