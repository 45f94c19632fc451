"""``text4d bench batch``: N identical sample fits through ``text4d batch`` on 1 device vs 2 (or all).

Timings of the same job list:

* ``direct_job_s``: one job run in this process with :func:`text4d.app.batch.run_job`
  (warm: the second of two runs), the no-Ray baseline of a job's own compute;
* ``one``: all N jobs on a fresh local Ray instance given 1 GPU (or 1 CPU worker);
* ``all``: the same on ``devices`` GPUs (default: every GPU; 2 CPU workers without CUDA).
  Skipped (``null``) when there is only one GPU.

``throughput_ratio = one.wall_s / all.wall_s`` (target >= 1.8 on 2 GPUs).

``overhead_per_job_s = one.wall_s / N - direct_job_s`` (target <= 2 s): the batch's wall time
minus the jobs' own compute, per job, with jobs back to back on one device. It is everything Ray and
the batch driver add: starting the worker (Python, imports, CUDA context; paid once per device and
amortised over the jobs), handing each job over, progress and result traffic, and the first job's
cold start in a fresh process. Per batch run, for telling these apart:

* ``outside_job_s``: device-seconds per job not spent inside the workers' ``run_job``
  (``(wall_s * devices - sum of job seconds) / N``);
* ``handover_s_mean`` / ``handover_s_max``: from the driver submitting a job to a warm worker to the
  job starting there (the first job of each worker excluded: it waits for the worker to start);
* ``worker_start_s``: from the batch's start to its first job starting (one worker's start-up);
* ``workers`` and ``jobs_per_worker``: worker processes used (1 per device when workers are reused).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console

from text4d.app.batch import import_ray, load_jobs, run_batch, run_job
from text4d.app.runkind import load
from text4d.app.sample import KIND as SAMPLE
from text4d.samples import load_sample

# Tiny CPU smoke size (as tests/toy_stage.py TINY_SAMPLE); the full size is configs/dynamic/sample.yaml, shortened.
TINY = [
    "sample.num_frames=3", "sample.resolution=32", "sample.train_views=2", "sample.test_views=1", "sample.supersample=1",
    "ref_size=32", "batch_size=2", "n_views=1", "init_points=300", "backend=torch", "static_iters=2", "iters=8",
]
FULL = ["static_iters=100", "iters=300"]


def run(jobs: int = 8, tiny: bool = False, devices: int | None = None, overrides: list[str] | None = None) -> dict:
    """Time ``jobs`` identical sample-fit jobs on 1 vs ``devices`` GPUs (CPU workers without CUDA); JSON-able."""
    ray = import_ray()
    if ray.is_initialized():
        raise RuntimeError("bench batch starts its own Ray instances; call it without ray.init()")
    cuda = torch.cuda.is_available()
    devices = devices or (torch.cuda.device_count() if cuda else 2)
    if cuda and devices > torch.cuda.device_count():
        raise RuntimeError(f"--devices {devices}: this machine has {torch.cuda.device_count()} GPU(s)")
    cpus_per_job = max(1, min(4, (os.cpu_count() or 2) // max(devices, 1))) if cuda else 1
    job_overrides = [*(TINY if tiny else FULL), "session.eval_every=0", *(["device=cpu"] if not cuda else []), *(overrides or [])]
    load_sample(load(SAMPLE, None, job_overrides).sample)  # generate the sample's cache once, not in every worker

    with tempfile.TemporaryDirectory(prefix="text4d-bench-batch-") as tmp:
        root = Path(tmp)
        jobs_file = root / "jobs.yaml"
        jobs_file.write_text(json.dumps({"defaults": {"overrides": job_overrides, "exports": []}, "jobs": [{"sample": True, "name": f"bench-{i}"} for i in range(jobs)]}))
        job = load_jobs(jobs_file)[0]
        threads = torch.get_num_threads()
        torch.set_num_threads(cpus_per_job)  # as many threads as a Ray worker gets (OMP_NUM_THREADS = its CPUs)
        try:
            direct = []
            for i in range(2):
                t0 = time.perf_counter()
                run_job(job, root / f"direct-{i}", Console(quiet=True))
                direct.append(time.perf_counter() - t0)
        finally:
            torch.set_num_threads(threads)
            if cuda:
                torch.cuda.empty_cache()  # the driver keeps no GPU memory while the workers run
        one = _timed_batch(ray, jobs_file, root / "one", 1, cuda, cpus_per_job)
        every = _timed_batch(ray, jobs_file, root / "all", devices, cuda, cpus_per_job) if devices > 1 else None

    direct_s = direct[1]
    return {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "devices": devices,
        "jobs": jobs,
        "cpus_per_job": cpus_per_job,
        "job_overrides": job_overrides,
        "ray": ray.__version__,
        "direct_job_s": round(direct_s, 3),
        "direct_first_job_s": round(direct[0], 3),
        "one": one,
        "all": every,
        "throughput_ratio": round(one["wall_s"] / every["wall_s"], 3) if every else None,
        "target_throughput_ratio": 1.8,
        "overhead_per_job_s": round(one["wall_s"] / jobs - direct_s, 3),
        "target_overhead_per_job_s": 2.0,
    }


def _timed_batch(ray, jobs_file: Path, out: Path, devices: int, cuda: bool, cpus_per_job: int) -> dict:
    """One batch on a fresh local Ray instance limited to ``devices`` GPUs (or CPU workers)."""
    if cuda:
        ray.init(num_gpus=devices, num_cpus=max(os.cpu_count() or 1, devices * cpus_per_job), include_dashboard=False, log_to_driver=False, configure_logging=False)
    else:
        ray.init(num_gpus=0, num_cpus=devices * cpus_per_job, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        started = time.time()
        result = run_batch(jobs_file, out=out, new=True, gpus_per_job=1, cpus_per_job=cpus_per_job, max_retries=0, console=Console(quiet=True), show=False)
    finally:
        ray.shutdown()
    attempts = [r for rs in result.results.values() for r in rs]
    inside = sum(r.get("seconds", 0.0) for r in attempts)
    n = len(result.rows)
    by_worker: dict[int, list[dict]] = {}
    for r in sorted(attempts, key=lambda r: r.get("started", 0.0)):
        by_worker.setdefault(r.get("pid", 0), []).append(r)
    handover = [r["started"] - r["submitted"] for rs in by_worker.values() for r in rs[1:] if r.get("submitted")]
    firsts = [r["started"] for r in attempts if r.get("started")]
    return {
        "wall_s": round(result.wall_s, 3),
        "jobs_per_min": round(60.0 * n / result.wall_s, 3),
        "job_s_mean": round(inside / max(len(attempts), 1), 3),
        "outside_job_s": round((result.wall_s * devices - inside) / n, 3),
        "handover_s_mean": round(statistics.fmean(handover), 4) if handover else None,
        "handover_s_max": round(max(handover), 4) if handover else None,
        "worker_start_s": round(min(firsts) - started, 3) if firsts else None,
        "worker_warm_up_s": sorted({r["warm_up_s"] for r in attempts if "warm_up_s" in r}),
        "workers": len(by_worker),
        "workers_started": result.workers_started,
        "jobs_per_worker": sorted(len(rs) for rs in by_worker.values()),
        "gpus_used": sorted({r.get("gpu", "") for r in attempts}),
        "done": result.count("done"),
        "errors": sorted({r["error"] for r in attempts if not r.get("ok")}),
    }
