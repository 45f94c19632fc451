"""Fixtures shared by several test files."""

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

NODE_TOOLS = Path(__file__).resolve().parents[1] / "scripts" / "node"


@pytest.fixture
def one_thread():
    """Bit-exact comparisons need one CPU thread: multi-threaded kernels (e.g. grid_sample's backward) sum in varying order."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def gltf_validator():
    """``validate(path) -> summary line`` through the Khronos glTF-Validator (scripts/node); fails on validator errors."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (scripts/install_test_tools.sh installs the validator where npm exists)")
    if not (NODE_TOOLS / "node_modules" / "gltf-validator").is_dir():
        pytest.skip("the glTF-Validator is not installed: npm ci --prefix scripts/node")

    def validate(path: Path) -> str:
        res = subprocess.run([node, str(NODE_TOOLS / "validate_gltf.js"), str(path)], capture_output=True, text=True)
        assert res.returncode == 0, f"glTF-Validator on {path}: {res.stdout}{res.stderr}"
        return res.stdout.splitlines()[0]

    return validate
