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
