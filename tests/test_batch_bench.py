"""``text4d bench batch`` in its tiny CPU mode: the numbers are there and the worker is reused."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")


def test_bench_batch_tiny_reports_throughput_and_overhead(tmp_path, monkeypatch):
    if ray.is_initialized():
        pytest.skip("bench batch starts its own Ray instances")
    monkeypatch.setenv("TEXT4D_CACHE", str(tmp_path / "cache"))  # workers inherit it at ray.init
    from text4d.app.bench.batch import run

    out = run(jobs=2, tiny=True, devices=1)
    one = out["one"]
    assert one["done"] == 2 and not one["errors"]
    assert one["workers"] == one["workers_started"] == 1 and one["jobs_per_worker"] == [2]
    assert one["handover_s_max"] is not None and one["handover_s_max"] < 1.0
    assert out["all"] is None and out["throughput_ratio"] is None  # one device: nothing to compare
    assert isinstance(out["overhead_per_job_s"], float) and out["target_overhead_per_job_s"] == 2.0
