"""Fixtures shared by several test files."""

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

NODE_TOOLS = Path(__file__).resolve().parents[1] / "scripts" / "node"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``gpu`` tests skip, saying so, where there is no CUDA; desktop-window tests (the ``xvfb`` fixture) are ``display`` tests."""
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (run on one by hand and reported; CI has none)")
    for item in items:
        if "xvfb" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.display)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Bit-exact comparisons need one CPU thread: multi-threaded kernels (e.g. grid_sample's backward) sum in varying order."""
    yield from _threads(1)


@pytest.fixture
def two_threads() -> Iterator[None]:
    """CPU replays are bit-exact with the thread count they recorded: tests of that record and replay on two."""
    yield from _threads(2)


def _node_tool(package: str) -> str:
    """The node binary, once ``package`` is installed in scripts/node (else the test skips, saying how to install it)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (scripts/install_test_tools.sh installs the npm tools where npm exists)")
    if not (NODE_TOOLS / "node_modules" / package).is_dir():
        pytest.skip(f"{package} is not installed: npm ci --prefix scripts/node")
    return node


@pytest.fixture
def gltf_validator():
    """``validate(path, tolerate=()) -> summary line`` through the Khronos glTF-Validator (scripts/node).

    Fails on any validator error, except those matching one of ``tolerate``: (code, regex on the
    JSON pointer) pairs for known limitations of the validator itself, each of which the caller
    must justify.
    """
    node = _node_tool("gltf-validator")

    def validate(path: Path, tolerate: tuple[tuple[str, str], ...] = ()) -> str:
        res = subprocess.run([node, str(NODE_TOOLS / "validate_gltf.js"), "--json", str(path)], capture_output=True, text=True)
        assert res.returncode in (0, 1), f"glTF-Validator could not run on {path}: {res.stdout}{res.stderr}"
        summary, *lines = res.stdout.splitlines()
        errors = [json.loads(line) for line in lines]
        left = [e for e in errors if not any(e["code"] == code and re.search(pointer, e["pointer"]) for code, pointer in tolerate)]
        assert not left, f"glTF-Validator on {path}: {summary}\n" + "\n".join(f"  {e['code']}: {e['message']} @ {e['pointer']}" for e in left[:10])
        return summary

    return validate


@pytest.fixture
def splat_transform():
    """``run(*args) -> stdout`` of PlayCanvas' splat-transform CLI (scripts/node): an independent reader of splat files."""
    node = _node_tool("@playcanvas/splat-transform")
    cli = NODE_TOOLS / "node_modules" / "@playcanvas" / "splat-transform" / "bin" / "cli.mjs"

    def run(*args: str) -> str:
        res = subprocess.run([node, str(cli), "--quiet", "--no-tty", *args], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, f"splat-transform {' '.join(args)} failed: {res.stdout}{res.stderr}"
        return res.stdout

    return run


@pytest.fixture(scope="session")
def svd_dir(tmp_path_factory) -> Path:
    pytest.importorskip("diffusers")
    import torch
    from diffusers.models.autoencoders.autoencoder_kl_temporal_decoder import AutoencoderKLTemporalDecoder
    from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionModel
    from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("svd") / "svd"
    UNetSpatioTemporalConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=8, out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"), cross_attention_dim=32,
        num_attention_heads=(2, 4), projection_class_embeddings_input_dim=96, addition_time_embed_dim=32,
    ).save_pretrained(d / "unet")
    AutoencoderKLTemporalDecoder(block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
                                 down_block_types=["DownEncoderBlock2D"] * 2).save_pretrained(d / "vae")
    CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, projection_dim=32, num_hidden_layers=2, num_attention_heads=4, image_size=224,
        intermediate_size=37, patch_size=32)).save_pretrained(d / "image_encoder")
    EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", prediction_type="v_prediction",
                           interpolation_type="linear", sigma_max=700.0, sigma_min=0.002, steps_offset=1,
                           timestep_spacing="leading", timestep_type="continuous",
                           use_karras_sigmas=True).save_pretrained(d / "scheduler")
    CLIPImageProcessor(crop_size=224, size=224).save_pretrained(d / "feature_extractor")
    (d / "model_index.json").write_text('{"_class_name": "StableVideoDiffusionPipeline", '
                                        '"unet": ["diffusers", "UNetSpatioTemporalConditionModel"], '
                                        '"vae": ["diffusers", "AutoencoderKLTemporalDecoder"], '
                                        '"image_encoder": ["transformers", "CLIPVisionModelWithProjection"], '
                                        '"scheduler": ["diffusers", "EulerDiscreteScheduler"], '
                                        '"feature_extractor": ["transformers", "CLIPImageProcessor"]}')
    return d


@pytest.fixture(scope="session")
def xvfb() -> Iterator[str]:
    """One private X display for every desktop-window test of the run (its name, e.g. ``:93``).

    DearPyGui's GLFW opens its X connection once per process and keeps it, so a second Xvfb for a
    later test module would leave the window talking to a display that has gone (a fatal X error).
    """
    from tests.support.display import xvfb_display

    with xvfb_display() as display:
        yield display
