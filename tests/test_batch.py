"""Jobs files and the job-kind dispatch of ``text4d batch`` (no Ray needed)."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from text4d.app import batch
from text4d.app.batch import Job, load_jobs, run_job, run_progress
from text4d.errors import ConfigError, InputError, Text4DError
from text4d.recording import RunFolder


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_jobs_with_defaults_names_overrides_and_exports(tmp_path):
    path = write(tmp_path, "jobs.yaml", """
defaults:
  overrides: [iters=30]
  exports: [ply-seq]
jobs:
  - sample: true
    name: tiny
    overrides: {ref_size: 32, densify: {start: 5}}
  - dnerf: scenes/jumping
    exports: [mp4]
  - prompt: "a cat: running"
  - "a dog"
  - image: data/anya.png
    config: configs/run.yaml
  - video: data/rose/
""")
    jobs = load_jobs(path, ["device=cpu"])
    assert [j.kind for j in jobs] == ["sample", "dnerf", "prompt", "prompt", "image", "video"]
    tiny = jobs[0]
    assert tiny.id == "tiny" and tiny.input == ""
    assert tiny.overrides == ("device=cpu", "iters=30", "ref_size=32", "densify.start=5")  # command line, defaults, job
    assert tiny.exports == ("ply-seq",) and jobs[1].exports == ("mp4",)
    assert jobs[1].input == "scenes/jumping" and jobs[1].id.startswith("jumping-")
    assert jobs[2].input == "a cat: running" and jobs[2].id.startswith("a-cat-running-")
    assert jobs[4].config == "configs/run.yaml" and jobs[5].id.startswith("rose-")
    assert len({j.id for j in jobs}) == len(jobs)


def test_auto_ids_are_stable_under_reordering_and_number_identical_jobs(tmp_path):
    a = load_jobs(write(tmp_path, "a.yaml", "- prompt: a cat\n- prompt: a dog\n- prompt: a dog\n"))
    b = load_jobs(write(tmp_path, "b.yaml", "- prompt: a dog\n- prompt: a cat\n"))
    assert a[0].id == b[1].id and a[1].id == b[0].id  # the id follows the job, not its line
    assert a[2].id == a[1].id + "-2"


def test_plain_text_file_is_one_prompt_per_line(tmp_path):
    jobs = load_jobs(write(tmp_path, "prompts.txt", "# my assets\na panda lifting weights\n\n  a blooming rose  \n"))
    assert [(j.kind, j.input) for j in jobs] == [("prompt", "a panda lifting weights"), ("prompt", "a blooming rose")]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("- promt: a cat\n", r"job 1: unknown key 'promt'"),
        ("- {prompt: a, image: b.png}\n", r"job 1: give exactly one of"),
        ("- sample: true\n- name: x\n  sample: yes please\n", r"job 2 \(x\): key 'sample' takes true"),
        ("- {sample: true, name: dup}\n- {prompt: a, name: dup}\n", r"jobs 1 and 2 are both named 'dup'"),
        ("- {sample: true, name: 'a b'}\n", r"key 'name' must use letters"),
        ("- {sample: true, overrides: [iters]}\n", r"job 1: key 'overrides' items must look like key=value"),
        ("- {sample: true, exports: ply}\n", r"key 'exports' must be a list"),
        ("jobz: []\n", r"unknown top-level key 'jobz'"),
        ("[]\n", r"lists no jobs"),
        ("- [unclosed\n", r"not valid YAML"),
    ],
)
def test_bad_jobs_files_name_the_job_and_key(tmp_path, text, match):
    path = write(tmp_path, "jobs.yaml", text)
    with pytest.raises((ConfigError, InputError), match=match):
        load_jobs(path)


def test_missing_jobs_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_jobs(tmp_path / "nope.yaml")


def test_a_kind_whose_module_is_missing_fails_as_not_available(tmp_path, monkeypatch):
    monkeypatch.setitem(batch.JOB_KINDS, "prompt", batch.JobKind("text4d.no_such_module:run", batch._run_chain))
    with pytest.raises(Text4DError, match="job kind 'prompt' is not available in this install"):
        run_job(Job("p", "prompt", "a cat"), tmp_path, Console(quiet=True))
    monkeypatch.setitem(batch.JOB_KINDS, "video", batch.JobKind("text4d.app.batch:no_such_entry", batch._run_chain))
    with pytest.raises(Text4DError, match=r"not available in this install \(text4d.app.batch.no_such_entry is missing\)"):
        run_job(Job("v", "video", "frames/"), tmp_path, Console(quiet=True))


def test_every_kind_of_this_install_is_available():
    for kind in batch.JOB_KINDS:
        batch.check_available(kind)


def test_progress_reads_the_newest_metrics_tail_and_config(tmp_path):
    run = RunFolder.create("job", tmp_path)
    run.write_config("iters: 100\nstatic_iters: 20\n")
    for it in (10, 20, 30):
        run.log_metrics({"iteration": it, "it_per_s": 8.0, "loss": 1.0})
    with open(run.metrics_path, "a") as f:
        f.write('{"iteration": 4')  # a torn last line (crash mid-append) is skipped
    p = run_progress(run.path)
    assert (p["stage"], p["iteration"], p["iters"], p["eta_s"]) == ("dynamic", 30, 120, 11.2)
    nested = RunFolder(run.path / "static")
    nested.path.mkdir()
    nested.write_config("iters: 50\n")
    nested.log_metrics({"iteration": 5, "it_per_s": 0.0})
    p = run_progress(run.path)
    assert (p["stage"], p["iteration"], p["iters"], p["eta_s"]) == ("static", 5, 50, None)


def test_status_reprints_the_written_table(tmp_path):
    rows = [{"job": "a-panda-lifting-weights-3f2a1b", "kind": "prompt", "state": "done", "attempts": 1, "iteration": 30, "iters": 30, "it_per_s": 0.04,
             "run": str(tmp_path / "a-1"), "node": "n1", "gpu": "0"},
            {"job": "b", "kind": "dnerf", "state": "failed", "attempts": 3, "error": "scene folder x does not exist"}]
    (tmp_path / "batch.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pipe = io.StringIO()  # `text4d batch --status DIR | grep ...`: one plain line per job
    assert batch.print_status(tmp_path, Console(file=pipe, width=80)) == rows
    lines = pipe.getvalue().splitlines()
    assert lines[0].split("\t")[:3] == ["job", "kind", "state"] and len(lines) == 3
    assert lines[1].split("\t") == ["a-panda-lifting-weights-3f2a1b", "prompt", "done", "", "30/30", "25.0 s/it", "", "n1:0", "1", "a-1"]
    assert lines[2].split("\t")[-1] == "scene folder x does not exist"
    term = io.StringIO()  # an 80-column terminal: columns are left out, never squeezed to a letter
    batch.print_status(tmp_path, Console(file=term, width=80, force_terminal=True, color_system=None))
    text = term.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    header = next(line for line in text.splitlines() if "job" in line)
    assert all(name in header for name in ("job", "state", "iteration", "run / error")), header
    assert "30/30" in text and "a-1" in text and "done" in text and "failed" in text
    with pytest.raises(InputError, match="has no batch.jsonl"):
        batch.print_status(tmp_path / "elsewhere")
