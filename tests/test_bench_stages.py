"""``bench static`` / ``bench animate`` on tiny random Zero123 (CPU): one timing per resolution phase, and totals that add them up."""

import pytest

from text4d.app.bench import animate, static


@pytest.mark.parametrize("bench,config", [(static, "dg"), (animate, "4d")])
def test_bench_times_every_resolution_phase(bench, config):
    result = bench.run(configs=(config,), device="cpu", tiny=True, measure_iters=2, warmup=1)
    r = result["configs"][config]
    assert list(r["phases"]) == ["0.0-0.3@16px", "0.3-0.6@32px", "0.6-1.0@32px"]
    lower = sum(p["s_per_iteration"] * (r["iters"] * share - 1) for p, share in zip(r["phases"].values(), (0.3, 0.3, 0.4)))
    assert r["total_s_for_iters"] >= round(lower, 1) > 0


def test_full_bench_runs_and_times_every_iteration():
    result = animate.run(configs=("4d",), device="cpu", tiny=True, warmup=1, full=True, overrides=["iters=10"])
    r = result["configs"]["4d"]
    assert r["every_iteration_run"]
    assert [p["warmup_iters"] + p["measured_iters"] for p in r["phases"].values()] == [3, 3, 4]
    assert r["total_s_for_iters"] == round(sum(p["warmup_s"] + p["measured_s"] for p in r["phases"].values()), 1)
