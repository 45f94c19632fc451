"""Without a GPU the demo and ``fit --sample`` pick the CPU preset, say so, and ``bench cpu-demo`` measures it."""

from __future__ import annotations

import io
import json

import yaml
from rich.console import Console

from tests.support.sample import TINY_SAMPLE
from text4d.app.sample import CPU_PRESET, GPU_PRESET, demo, sample_preset

SHORT = ["iters=2", "static_iters=1", "exports=[]"]


def run_demo(tmp_path, config=None) -> tuple[dict, dict, str]:
    shown = io.StringIO()
    folder = demo(ui="none", config=config, overrides=[*TINY_SAMPLE, *SHORT, f"out={tmp_path}"], console=Console(file=shown, width=400))
    manifest = json.loads((folder / "manifest.json").read_text())
    return manifest, yaml.safe_load((folder / "config.yaml").read_text()), shown.getvalue()


def test_a_cpu_run_picks_the_cpu_preset_and_says_what_it_chose(tmp_path):
    assert sample_preset(["device=cpu"]) == CPU_PRESET
    manifest, config, shown = run_demo(tmp_path)
    preset = yaml.safe_load(CPU_PRESET.read_text())
    assert config["densify"]["max_gaussians"] == preset["densify"]["max_gaussians"] != yaml.safe_load(GPU_PRESET.read_text())["densify"]["max_gaussians"]
    note = f"CPU preset ({CPU_PRESET.name}): 32 px"  # the tiny sample's overrides still win over the preset
    assert note in shown and any(note in n for n in manifest["notes"])
    assert f"at most {preset['densify']['max_gaussians']:,} Gaussians, 3 iterations" in shown


def test_an_explicit_config_is_used_as_given_with_no_preset_note(tmp_path):
    manifest, config, shown = run_demo(tmp_path, config=GPU_PRESET)
    assert config["densify"]["max_gaussians"] == yaml.safe_load(GPU_PRESET.read_text())["densify"]["max_gaussians"]
    assert "CPU preset" not in shown and "notes" not in manifest


def test_bench_cpu_demo_reports_time_to_the_target_and_the_fit(tmp_path):
    from text4d.app.bench.cpu_demo import run

    result = run(target_psnr=5.0, watch_seconds=600.0, overrides=[*TINY_SAMPLE, "iters=6", "static_iters=2", "session.eval_every=2", "session.log_every=1"], threads=1)
    assert result["config"] == str(CPU_PRESET) and result["state"] == "finished" and result["iterations"] == 8
    assert result["threads"] == 1 and result["iterations_per_second"] > 0 and result["setup_seconds"] > 0
    curve = result["psnr_curve"]
    assert [c["iteration"] for c in curve] == sorted(c["iteration"] for c in curve) and len(curve) >= 3
    assert result["seconds_to_target"] == next(c["seconds"] for c in curve if c["psnr"] >= 5.0)
    assert result["psnr_at_watch_seconds"] == curve[-1]["psnr"] and 0 < result["final"]["test_psnr"] < 60
