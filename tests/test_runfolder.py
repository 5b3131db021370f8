"""Run folders: fsl-opt writes into and deletes only folders it created, one live run each."""

import json
import os
import subprocess
import sys

import pytest

from fsl_opt.errors import ConfigError
from fsl_opt.federation import runfolder


def test_new_run_refuses_a_foreign_folder(tmp_path):
    """A folder holding someone else's files is neither written into nor deleted."""
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter1.tex").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match="not a fsl-opt run"):
            runfolder.prepare(thesis, "run", overwrite=overwrite)
    assert (thesis / "chapter1.tex").read_text() == "precious"
    assert sorted(p.name for p in thesis.iterdir()) == ["chapter1.tex"]


@pytest.mark.parametrize("path", [".", ""])
def test_overwrite_refuses_dot_and_empty(tmp_path, monkeypatch, path):
    """`--out . --overwrite` and `--out ''` are refused before anything is touched."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"not '\.' or ''"):
        runfolder.prepare(runfolder.Path(path), "run", overwrite=True)
    assert (tmp_path / "keep.txt").exists()


def test_overwrite_refuses_the_current_directory_even_if_marked(tmp_path, monkeypatch):
    """A marked folder that holds the working directory is never deleted."""
    run = tmp_path / "run"
    runfolder.prepare(run, "run", overwrite=False)
    (run / "sub").mkdir()
    monkeypatch.chdir(run / "sub")
    with pytest.raises(ConfigError, match="current directory"):
        runfolder.prepare(run, "run", overwrite=True)
    assert run.exists()


def test_overwrite_deletes_only_our_own_kind(tmp_path):
    """An experiment folder is not a run folder: --overwrite of a run refuses it."""
    exp = tmp_path / "exp"
    runfolder.prepare(exp, "experiment", overwrite=False)
    (exp / "rows.csv").write_text("a")
    with pytest.raises(ConfigError, match="holds a fsl-opt experiment folder"):
        runfolder.prepare(exp, "run", overwrite=True)
    run = tmp_path / "run"
    runfolder.prepare(run, "run", overwrite=False)
    (run / "log.jsonl").write_text("{}")
    assert runfolder.prepare(run, "run", overwrite=True) is False
    assert not (run / "log.jsonl").exists() and runfolder.kind_of(run) == "run"


def test_out_that_is_a_file(tmp_path):
    """--out naming a file is one clear error."""
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        runfolder.prepare(f, "run", overwrite=False)


def test_lock_refuses_a_live_holder_and_takes_a_stale_one(tmp_path):
    """A lock held by a live process is refused with its pid; a dead holder's is taken."""
    folder = tmp_path / "run"
    runfolder.prepare(folder, "run", overwrite=False)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        host = __import__("socket").gethostname()
        (folder / runfolder.LOCK).write_text(json.dumps({"pid": holder.pid, "host": host}))
        with pytest.raises(ConfigError, match=f"in use by process {holder.pid}"):
            with runfolder.lock(folder):
                pass
        with pytest.raises(ConfigError, match="in use"):
            runfolder.prepare(folder, "run", overwrite=True)
    finally:
        holder.kill()
        holder.wait()
    with runfolder.lock(folder):  # the holder is gone: stale
        assert json.loads((folder / runfolder.LOCK).read_text())["pid"] == os.getpid()
    assert not (folder / runfolder.LOCK).exists()


def test_a_folder_that_only_looks_like_a_run_is_never_deleted(tmp_path):
    """config.toml + log.jsonl + a thesis, no marker: --overwrite refuses and names
    `fsl-opt adopt`; once adopted (on the user's word) it is a run folder."""
    legacy = tmp_path / "legacy"
    (legacy / "results").mkdir(parents=True)
    for name in ("config.toml", "log.jsonl", "thesis.tex"):
        (legacy / name).write_text("precious")
    with pytest.raises(ConfigError, match="fsl-opt adopt"):
        runfolder.prepare(legacy, "run", overwrite=True)
    assert sorted(p.name for p in legacy.iterdir()) == [
        "config.toml",
        "log.jsonl",
        "results",
        "thesis.tex",
    ]
    runfolder.adopt(legacy)
    assert runfolder.kind_of(legacy) == "run"
    with pytest.raises(ConfigError, match="already a fsl-opt run"):
        runfolder.adopt(legacy)
    with pytest.raises(ConfigError, match=r"holds no config\.toml"):
        runfolder.adopt(tmp_path)


def test_overwrite_never_deletes_through_a_symlink(tmp_path):
    """--out LINK --overwrite, LINK pointing at a run: refused, both left as they are."""
    run = tmp_path / "run"
    runfolder.prepare(run, "run")
    (run / "log.jsonl").write_text("{}")
    link = tmp_path / "link"
    link.symlink_to(run)
    with pytest.raises(ConfigError, match="symbolic link"):
        runfolder.prepare(link, "run", overwrite=True)
    assert link.is_symlink() and (run / "log.jsonl").exists()


def test_an_experiment_never_writes_over_another(tmp_path):
    """A benchmark aimed at a figure's folder is refused (the folder's marker, or for a
    folder marked before names, its settings.json, says whose it is)."""
    fig = tmp_path / "fig3"
    runfolder.prepare(fig, "experiment")  # marked the old way, without a name
    (fig / "settings.json").write_text(json.dumps({"experiment": "fig3"}))
    (fig / "summary.md").write_text("fig3's findings")
    with pytest.raises(ConfigError, match="holds the results of 'fig3', not 'solvers'"):
        runfolder.prepare(fig, "experiment", name="solvers")
    assert runfolder.prepare(fig, "experiment", name="fig3") is True
    assert runfolder.name_of(fig) == "fig3"
    assert (fig / "summary.md").read_text() == "fig3's findings"


def test_the_command_line_refuses_a_bench_into_a_figure(tmp_path):
    """`fsl-opt bench solvers --quick --out FIG3` exits 2 and fig3's summary stays."""
    from fsl_opt.cli import main

    fig = tmp_path / "fig3"
    runfolder.prepare(fig, "experiment", name="fig3")
    (fig / "summary.md").write_text("fig3's findings")
    assert main(["bench", "solvers", "--quick", "--out", str(fig)]) == 2
    assert (fig / "summary.md").read_text() == "fig3's findings"


def _trained(folder):
    """A run folder as train leaves it (marker, records, checkpoint, adapter)."""
    runfolder.prepare(folder, "run")
    for name in ("config.toml", "log.jsonl", "log.csv", "data.json", "placement.json", "run.png"):
        (folder / name).write_text(name)
    for sub in ("checkpoint", "adapter"):
        (folder / sub).mkdir()
        (folder / sub / "weights.pt").write_text("w")
    return folder


def test_overwrite_removes_what_fsl_opt_wrote_and_keeps_the_folder(tmp_path):
    run = _trained(tmp_path / "run")
    assert runfolder.prepare(run, "run", overwrite=True) is False
    assert sorted(p.name for p in run.iterdir()) == [runfolder.MARKER]
    assert runfolder.kind_of(run) == "run"


def test_overwrite_refuses_a_users_file_and_names_it(tmp_path):
    """A user's own file in a run folder: refused, named, nothing removed."""
    run = _trained(tmp_path / "run")
    (run / "notes.md").write_text("mine")
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(ConfigError, match=r"holds notes\.md, which fsl-opt did not write"):
        runfolder.prepare(run, "run", overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == before
    assert (run / "notes.md").read_text() == "mine"


def test_a_copied_marker_does_not_make_a_project_deletable(tmp_path):
    """`cp -a runs/x/. project/` then --overwrite --out project: paper.tex stays."""
    import shutil

    run = _trained(tmp_path / "run")
    project = tmp_path / "project"
    project.mkdir()
    (project / "paper.tex").write_text("precious")
    shutil.copytree(run, project, dirs_exist_ok=True)
    with pytest.raises(ConfigError, match=r"paper\.tex"):
        runfolder.prepare(project, "run", overwrite=True)
    assert (project / "paper.tex").read_text() == "precious"
    assert (project / "checkpoint" / "weights.pt").exists()


def test_overwrite_never_removes_a_file_the_command_reads(tmp_path):
    """`train --overwrite --data csv:R/mydata.csv --out R`: refused, the CSV stays (it
    would be named as foreign too; the input check names it as what the command reads)."""
    run = _trained(tmp_path / "R")
    data = run / "data.json"  # an owned name, read as an input: still refused
    with pytest.raises(ConfigError, match=r"reads data \(.*data.json\)"):
        runfolder.prepare(run, "run", overwrite=True, reads={"data": data})
    assert data.read_text() == "data.json"


def test_a_plan_never_replaces_a_trained_run(tmp_path):
    """`plan --overwrite --out TRAINED_RUN` is refused: its checkpoint and adapter stay;
    a plan replaces a plan."""
    run = _trained(tmp_path / "run")
    with pytest.raises(ConfigError, match="holds a fsl-opt run folder"):
        runfolder.prepare(run, "plan", overwrite=True)
    assert (run / "adapter" / "weights.pt").exists()
    plan = tmp_path / "plan"
    runfolder.prepare(plan, "plan")
    (plan / "log.jsonl").write_text("{}")
    (plan / "plan.png").write_text("png")
    with pytest.raises(ConfigError, match="holds a fsl-opt plan folder"):
        runfolder.prepare(plan, "run", overwrite=True)
    assert runfolder.prepare(plan, "plan", overwrite=True) is False
    assert not (plan / "log.jsonl").exists()


def test_a_plan_marked_as_a_run_before_plans_had_a_kind_is_a_plan(tmp_path):
    old = tmp_path / "old-plan"
    runfolder.prepare(old, "run")
    (old / "placement.json").write_text(json.dumps({"planned": True}))
    (old / "log.jsonl").write_text("{}")
    assert runfolder.kind_of(old) == "plan"
    assert runfolder.prepare(old, "plan", overwrite=True) is False
    assert runfolder.kind_of(old) == "plan"


def test_experiments_and_benchmarks_are_never_overwritten(tmp_path):
    with pytest.raises(ValueError, match="never overwritten"):
        runfolder.prepare(tmp_path / "x", "experiment", overwrite=True)
    shared = tmp_path / "solvers"
    runfolder.prepare(shared, "experiment", name="solvers")
    (shared / "time.csv").write_text("t")
    assert runfolder.prepare(shared, "benchmark", name="solvers") is True


def test_the_command_line_keeps_the_csv_it_reads(tmp_path, monkeypatch):
    """End to end: train --overwrite with its data inside --out exits 2; the data stays."""
    from fsl_opt.cli import main

    out = _trained(tmp_path / "R")
    csv = out / "mydata.csv"
    csv.write_text("text,label\na,x\nb,y\n")
    rc = main(
        [
            "train",
            "--model",
            "tiny",
            "--data",
            f"csv:{csv}",
            "--overwrite",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 2
    assert csv.read_text() == "text,label\na,x\nb,y\n"
    assert (out / "checkpoint" / "weights.pt").exists()
