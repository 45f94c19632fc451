"""Dual-path LoRA: which modules get adapters, zero-init, switching, file formats (tiny random UNet3D)."""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from peft.tuners.tuners_utils import BaseTunerLayer  # noqa: E402

from text4d.errors import InputError  # noqa: E402
from text4d.video.lora import (  # noqa: E402
    DualLoRA,
    Path_,
    convert_released,
    read_adapter,
    read_adapter_file,
    save_adapter_file,
    target_modules,
)
from text4d.video.random_models import build_t2v  # noqa: E402


@pytest.fixture(scope="module")
def base_unet():
    return build_t2v(tiny=True, seed=0).unet


@pytest.fixture
def unet(base_unet):
    return copy.deepcopy(base_unet)


def _inputs(frames: int = 3):
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, 4, frames, 16, 16, generator=g), torch.randn(1, 77, 16, generator=g)


def _perturb(params) -> None:
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 0.5)


def test_adapters_on_the_right_modules_only(unet):
    n2d = sum(type(m).__name__ == "Transformer2DModel" for m in unet.modules())
    ntemp = sum(type(m).__name__ == "TransformerTemporalModel" for m in unet.modules())
    assert unet.transformer_in.__class__.__name__ == "TransformerTemporalModel"
    lora = DualLoRA(unet, rank=4, n_spatial=2)
    spatial, temporal = set(lora.layers["spatial"]), set(lora.layers["temporal"])
    # one BasicTransformerBlock per transformer in the tiny model: attn1 q,k,v,out + ff in, out
    assert len(spatial) == 6 * n2d
    # attn1 + attn2 (4 each) + ff (2), transformer_in included
    assert len(temporal) == 10 * ntemp
    assert any(n.startswith("transformer_in.") for n in temporal)
    assert not any(".attn2." in n for n in spatial), "cross-attention must stay unadapted on the spatial path"
    adapted = {n for n, m in unet.named_modules() if isinstance(m, BaseTunerLayer)}
    assert adapted == spatial | temporal
    assert all(len(unet.get_submodule(n).lora_A) == 2 for n in spatial)
    assert all(list(unet.get_submodule(n).lora_A) == ["temporal"] for n in temporal)


def test_untrained_adapters_leave_outputs_unchanged(unet):
    x, emb = _inputs()
    with torch.no_grad():
        ref = unet(x, 10, encoder_hidden_states=emb).sample
        lora = DualLoRA(unet, rank=4, n_spatial=1)
        lora.activate(spatial=0, temporal=True)
        unet.eval()
        out = unet(x, 10, encoder_hidden_states=emb).sample
    assert torch.equal(out, ref)


def test_switching_and_scaling_per_path(unet):
    x, emb = _inputs()
    unet.eval()
    with torch.no_grad():
        base = unet(x, 10, encoder_hidden_states=emb).sample
    lora = DualLoRA(unet, rank=4, n_spatial=2, dropout=0.0)
    _perturb(lora.parameters("spatial", 0))
    _perturb(lora.parameters("temporal"))
    with torch.no_grad():
        lora.activate(spatial=1, temporal=False)  # the untouched adapter
        assert torch.equal(unet(x, 10, encoder_hidden_states=emb).sample, base)
        lora.activate(spatial=0, temporal=False)
        s_out = unet(x, 10, encoder_hidden_states=emb).sample
        assert not torch.allclose(s_out, base)
        lora.activate(spatial=None, temporal=True)
        t_out = unet(x, 10, encoder_hidden_states=emb).sample
        assert not torch.allclose(t_out, base)
        lora.set_scale("temporal", 0.0)
        assert torch.allclose(unet(x, 10, encoder_hidden_states=emb).sample, base, atol=1e-6)
        lora.set_scale("temporal", 1.0)
        with lora.merged(spatial=None, temporal=True):
            merged = unet(x, 10, encoder_hidden_states=emb).sample
        assert torch.allclose(merged, t_out, atol=1e-4)  # W x + B (A x) vs (W + B A) x: fp32 rounding
        lora.activate(spatial=None, temporal=False)
        assert torch.allclose(unet(x, 10, encoder_hidden_states=emb).sample, base, atol=1e-5)


def test_training_flags_follow_the_active_path(unet):
    lora = DualLoRA(unet, rank=4, n_spatial=2)
    lora.activate(spatial=1, temporal=True, train="temporal")
    trainable = {id(p) for p in unet.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in lora.parameters("temporal")}
    lora.activate(spatial=1, temporal=False, train="spatial")
    trainable = {id(p) for p in unet.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in lora.parameters("spatial", 1)}


def test_safetensors_round_trip_is_bit_exact(unet, base_unet, tmp_path):
    lora = DualLoRA(unet, rank=4, n_spatial=3)
    _perturb(lora.parameters())
    for path in ("spatial", "temporal"):
        save_adapter_file(lora, path, tmp_path / f"{path}.safetensors")
    other = copy.deepcopy(base_unet)
    lora2 = DualLoRA(other, rank=4, n_spatial=3)
    for path in ("spatial", "temporal"):
        ad = read_adapter_file(tmp_path / f"{path}.safetensors")
        assert (ad.rank, ad.count) == (4, 3 if path == "spatial" else 1)
        lora2.load_state(path, ad.tensors, ad.source)
    for a, b in zip(lora.parameters(), lora2.parameters()):
        assert torch.equal(a, b)
    wrong = DualLoRA(copy.deepcopy(base_unet), rank=2, n_spatial=3)
    with pytest.raises(InputError, match="shape"):
        wrong.load_state("temporal", read_adapter_file(tmp_path / "temporal.safetensors").tensors, "x")


def _released_list(unet, path: Path_, rank: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    out = []
    for name in target_modules(unet, path):
        lin = unet.get_submodule(name)
        r = min(rank, lin.in_features, lin.out_features)
        out += [torch.randn(lin.out_features, r, generator=g), torch.randn(r, lin.in_features, generator=g)]
    return out


def test_released_checkpoint_loads_into_the_same_modules(unet, base_unet, tmp_path):
    ckpt = tmp_path / "checkpoint-300"
    tensors = {}
    for path in ("spatial", "temporal"):
        (ckpt / path / "lora").mkdir(parents=True)
        tensors[path] = _released_list(unet, path, rank=32)  # rank clipped per layer as the original does
        torch.save(tensors[path], ckpt / path / "lora" / "300_unet.pt")
    temporal = read_adapter(ckpt, "temporal", unet)
    spatial = read_adapter(ckpt / "spatial" / "lora", "spatial", unet, bare=True)
    lora = DualLoRA(unet, rank=32, n_spatial=1)
    lora.load_state("temporal", temporal.tensors, temporal.source)
    lora.load_state("spatial", spatial.tensors, spatial.source)
    for path in ("spatial", "temporal"):
        adapter = "spatial_0" if path == "spatial" else "temporal"
        for k, name in enumerate(target_modules(base_unet, path)):
            layer = unet.get_submodule(name)
            assert torch.equal(layer.lora_B[adapter].weight, tensors[path][2 * k])
            assert torch.equal(layer.lora_A[adapter].weight, tensors[path][2 * k + 1])
    # convert to our format and read it back: same numbers
    written = convert_released(ckpt, copy.deepcopy(base_unet), tmp_path / "converted")
    assert {p.name for p in written} == {"spatial.safetensors", "temporal.safetensors"}
    conv = read_adapter_file(tmp_path / "converted" / "temporal.safetensors")
    assert all(torch.equal(conv.tensors[k], v) for k, v in temporal.tensors.items())


def test_released_checkpoint_that_does_not_fit_is_refused(base_unet, tmp_path):
    unet = copy.deepcopy(base_unet)
    good = _released_list(unet, "temporal", rank=4)
    lora_dir = tmp_path / "t" / "temporal" / "lora"
    lora_dir.mkdir(parents=True)
    torch.save(good[:-2], lora_dir / "10_unet.pt")
    with pytest.raises(InputError, match=r"holds \d+ tensors .* temporal path has \d+ adapted linears"):
        read_adapter(tmp_path / "t", "temporal", unet)
    bad = list(good)
    bad[1] = torch.randn(bad[1].shape[0] + 1, bad[1].shape[1])
    bad[0] = torch.randn(bad[0].shape[0], bad[0].shape[1] + 1)
    bad[2] = torch.randn(3, 3)
    torch.save(bad, lora_dir / "10_unet.pt")
    with pytest.raises(InputError, match="does not fit this base model"):
        read_adapter(tmp_path / "t", "temporal", unet)
    (lora_dir / "10_unet.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot read MotionDirector checkpoint"):
        read_adapter(tmp_path / "t", "temporal", unet)


def test_autocast_only_while_fp32_adapters_run_unmerged(unet, base_unet):
    """Sampling skips autocast's casts unless an fp32 adapter actually runs beside half weights."""
    from text4d.video.generate import _runs_fp32_adapters

    half = torch.bfloat16
    assert not _runs_fp32_adapters(copy.deepcopy(base_unet).to(half), half)
    unet.to(half)
    lora = DualLoRA(unet, rank=4, n_spatial=1)
    lora.activate(spatial=0, temporal=True)
    assert _runs_fp32_adapters(unet, half)
    with lora.merged(spatial=0, temporal=True):
        assert not _runs_fp32_adapters(unet, half)
    with lora.disabled():
        assert not _runs_fp32_adapters(unet, half)
    assert _runs_fp32_adapters(unet, half)
