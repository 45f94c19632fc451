"""``text4d batch`` on a local Ray instance with 2 CPU workers: parallel jobs on reused workers, a failing job,
a worker killed mid-job, interrupt and resume.

One Ray instance serves the whole module (starting Ray takes seconds on 2 cores).
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import threading
import time

import pytest
from rich.console import Console

from text4d.app.batch import read_rows, run_batch
from text4d.recording import RunFolder

ray = pytest.importorskip("ray")  # text4d.app.batch imports Ray only when a batch runs on it

TINY = [
    "sample.num_frames=3", "sample.resolution=32", "sample.train_views=2", "sample.test_views=1", "sample.supersample=1",
    "ref_size=32", "batch_size=2", "n_views=1", "init_points=300", "backend=torch",
    "session.eval_every=0", "session.log_every=2", "static_iters=2",
]


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    before = os.environ.get("TEXT4D_CACHE")
    os.environ["TEXT4D_CACHE"] = str(cache)  # workers inherit the driver's environment at ray.init
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()
    if before is None:
        os.environ.pop("TEXT4D_CACHE", None)
    else:
        os.environ["TEXT4D_CACHE"] = before


def jobs_file(tmp_path, jobs):
    path = tmp_path / "jobs.yaml"
    path.write_text(json.dumps({"defaults": {"exports": ["ply-seq"]}, "jobs": jobs}))  # JSON is YAML
    return path


def tiny_sample(name, iters):
    return {"sample": True, "name": name, "overrides": [*TINY, f"iters={iters}"]}


def quiet():
    return Console(quiet=True)


def test_parallel_jobs_and_a_broken_job_that_fails_alone(local_ray, tmp_path):
    path = jobs_file(tmp_path, [
        tiny_sample("a", 6),
        tiny_sample("b", 6),
        tiny_sample("c", 6),
        {"dnerf": str(tmp_path / "no_scene"), "name": "broken"},
    ])
    result = run_batch(path, out=tmp_path / "rec", max_retries=1, console=quiet(), show=False)
    rows = {r["job"]: r for r in result.rows}
    assert [rows[j]["state"] for j in "abc"] == ["done"] * 3
    for j in "abc":
        run = RunFolder(rows[j]["run"])
        assert run.path.parent == result.batch_dir and run.manifest()["batch"]["done"]
        assert rows[j]["iteration"] == rows[j]["iters"] == 8
        assert run.has_checkpoint("latest") and list(run.exports_dir.glob("ply-it000008/*.ply"))
        assert rows[j]["gpu"] == "cpu" and rows[j]["attempts"] == 1
    broken = rows["broken"]
    assert broken["state"] == "failed" and broken["attempts"] == 2  # one retry, then given up
    assert "no_scene" in broken["error"], broken["error"]
    assert len(result.results["broken"]) == 2 and not any(r["ok"] for r in result.results["broken"])
    # two CPU workers: at least two sample jobs ran at the same time
    spans = sorted((r["started"], r["ended"]) for j in "abc" for r in result.results[j])
    assert any(spans[i + 1][0] < spans[i][1] for i in range(len(spans) - 1)), spans
    # long-lived workers: 4 jobs on 2 slots ran in 2 processes (the user error did not cost a worker)
    assert result.workers_started == 2
    pids = {r["pid"] for rs in result.results.values() for r in rs}
    assert len(pids) == 2 and max(r["worker_jobs"] for rs in result.results.values() for r in rs) >= 2
    # the table on disk is the final one
    assert {r["job"]: r["state"] for r in read_rows(result.batch_dir)} == {"a": "done", "b": "done", "c": "done", "broken": "failed"}


def poll_until(ready, seconds=120, period=0.02):
    """Call ``ready()`` every ``period`` s until it returns something truthy; return it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = ready()
        if value:
            return value
        time.sleep(period)
    raise AssertionError(f"not ready after {seconds} s")


def last_iteration(metrics):
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    return max((json.loads(line)["iteration"] for line in lines if line.endswith("}")), default=0)


def test_interrupted_batch_resumes_and_skips_finished_jobs(local_ray, tmp_path):
    path = jobs_file(tmp_path, [
        tiny_sample("short", 4),
        tiny_sample("long", 80),
    ])
    out = tmp_path / "rec"
    stop = threading.Event()
    printed = io.StringIO()
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", run_batch(path, out=out, max_retries=0, console=Console(file=printed), show=False, stop=stop)))
    thread.start()
    # The stop is triggered by the long job's own progress, and the job cannot run on meanwhile: its worker is frozen
    # from the moment it has logged iteration 4 until the batch has asked every job to stop.
    header = poll_until(lambda: re.search(r"pid (\d+)", "".join(p.read_text() for p in out.glob("batch-*/logs/long.log"))))
    pid = int(header.group(1))
    reached = poll_until(lambda: next((it for it in map(last_iteration, out.glob("batch-*/long-*/metrics.jsonl")) if it >= 4), None))
    os.kill(pid, signal.SIGSTOP)
    try:
        assert reached < 82
        wait_for_row(out, "short", lambda r: r["state"] == "done")
        stop.set()  # what Ctrl-C does
        poll_until(lambda: "stopping:" in printed.getvalue())
        time.sleep(1.0)  # the driver's request_stop reaches the progress board (the driver polls it every 0.5 s)
    finally:
        os.kill(pid, signal.SIGCONT)
    thread.join(120)
    first = box["result"]
    rows = {r["job"]: r for r in first.rows}
    assert first.interrupted and rows["short"]["state"] == "done" and rows["long"]["state"] == "interrupted"
    long_run = RunFolder(rows["long"]["run"])
    saved = json.loads((long_run.checkpoint_dir / "latest.json").read_text())
    stopped_at = saved["session"]["iteration"]
    assert 4 <= stopped_at < 82 and saved["session"]["reason"] == "stop"  # saved on the way out
    short_run = rows["short"]["run"]

    second = run_batch(path, out=out, max_retries=0, console=quiet(), show=False)
    rows = {r["job"]: r for r in second.rows}
    assert second.batch_dir == first.batch_dir and not second.interrupted
    assert rows["short"]["state"] == "skipped" and rows["short"]["run"] == short_run and second.results["short"] == []
    assert rows["long"]["state"] == "done" and rows["long"]["run"] == str(long_run.path)  # same folder, resumed
    assert rows["long"]["iteration"] == 82
    opens = [e for e in long_run.edits() if e["command"] == "open"]
    assert [e["iteration"] for e in opens] == [0, stopped_at]
    assert len(list(first.batch_dir.glob("long-*"))) == 1 and len(list(first.batch_dir.glob("short-*"))) == 1


def wait_for_row(out, job, ready, seconds=120):
    """Poll the batch's batch.jsonl until ``ready(row)`` holds for ``job``; returns the row."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.3)
        batches = list(out.glob("batch-*/batch.jsonl"))
        rows = {r["job"]: r for r in read_rows(batches[0].parent)} if batches else {}
        if job in rows and ready(rows[job]):
            return rows[job]
    raise AssertionError(f"job {job} never got ready: {rows.get(job)}")


def test_a_worker_killed_mid_job_is_replaced_and_its_job_retried(local_ray, tmp_path):
    path = jobs_file(tmp_path, [
        tiny_sample("victim", 60),
        tiny_sample("other", 6),
        tiny_sample("later", 6),
    ])
    out = tmp_path / "rec"
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", run_batch(path, out=out, max_retries=1, console=quiet(), show=False)))
    thread.start()
    row = wait_for_row(out, "victim", lambda r: r["state"] == "running" and r.get("pid") and (r.get("iteration") or 0) >= 4)
    os.kill(row["pid"], signal.SIGKILL)  # what the kernel's OOM killer does
    thread.join(180)
    result = box["result"]
    rows = {r["job"]: r for r in result.rows}
    assert [rows[j]["state"] for j in ("victim", "other", "later")] == ["done"] * 3
    victim = result.results["victim"]
    assert rows["victim"]["attempts"] == 2 and len(victim) == 2
    assert victim[0].get("worker_died") and "worker died" in victim[0]["error"] and victim[1]["ok"]
    assert victim[1]["pid"] != row["pid"] and rows["victim"]["iteration"] == rows["victim"]["iters"] == 62
    assert result.workers_started == 3  # two slots, one replacement
