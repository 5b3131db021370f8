"""The command line's outer boundary: a bug is one line and status 1 (its traceback on
request), text that is not UTF-8 is refused before anything is made, and SIGTERM ends a run
as Ctrl-C does (status 143, a last line, the run folder consistent: a resume completes it
with the records of a run made straight through)."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from fsl_opt import cli
from fsl_opt.cli import main
from fsl_opt.federation.runlog import MEASURED_FIELDS


def test_an_internal_error_is_one_line(monkeypatch, capsys):
    def boom(args):
        raise RuntimeError("something broke\nover two lines")

    parser = cli.build_parser

    def patched():
        p = parser()
        for action in p._subparsers._group_actions:  # type: ignore[union-attr]
            action.choices["solve"].set_defaults(run=boom)
        return p

    monkeypatch.setattr(cli, "build_parser", patched)
    assert main(["solve", "examples/system.toml"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fsl-opt: internal error: RuntimeError")
    assert "FSL_OPT_DEBUG=1" in err
    monkeypatch.setenv("FSL_OPT_DEBUG", "1")
    with pytest.raises(RuntimeError, match="something broke"):
        main(["solve", "examples/system.toml"])


def test_text_that_is_not_utf8_is_refused_before_anything_is_made(tmp_path, capsys):
    out = str(tmp_path / "run") + "\udcff"  # how Python passes the byte 0xff in argv
    assert main(["train", "--model", "tiny", "--out", out]) == 2
    assert "argument 5" in capsys.readouterr().err  # train --model tiny --out OUT
    assert list(tmp_path.iterdir()) == []


def test_sigterm_ends_a_run_like_ctrl_c(tmp_path, monkeypatch, fsl_opt_process):
    monkeypatch.setenv("FSL_OPT_CACHE", str(tmp_path / "cache"))
    args = ["train", "--model", "tiny", "--samples-per-device", "24", "--test-samples", "48"]
    args += ["--max-length", "32", "--batch-size", "8", "--rounds", "6", "--quiet", "--no-plot"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    straight = [json.loads(x) for x in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    out, output = tmp_path / "b", tmp_path / "process.log"
    log = out / "log.jsonl"
    proc = fsl_opt_process([*args, "--out", str(out)], dict(os.environ), output)
    deadline = time.monotonic() + 240
    while (not log.exists() or len(log.read_text().splitlines()) < 2) and proc.is_alive():
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGTERM)
    proc.join(timeout=60)
    assert proc.exitcode == 143, (proc.exitcode, output.read_text())
    assert "fsl-opt: terminated" in output.read_text()
    assert main([*args, "--out", str(out), "--resume"]) == 0
    resumed = [json.loads(x) for x in log.read_text().splitlines()]

    def stable(recs):
        return [{k: v for k, v in r.items() if k not in MEASURED_FIELDS} for r in recs]

    assert stable(resumed) == stable(straight)
