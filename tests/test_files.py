"""Single output files (plot, trace, fit-accuracy): never replaced unasked, never written
through a link, whole or absent."""

import os

import pytest

from fsl_opt.cli import main
from fsl_opt.errors import ConfigError
from fsl_opt.files import new_file, write_atomic

SYNTH = ["trace", "synth", "--devices", "2", "--rounds", "2", "--seed", "0"]


def test_new_file_refuses_what_it_must_not_replace(tmp_path):
    f = tmp_path / "a.csv"
    assert new_file(f, overwrite=False, suffix=".csv") == f
    f.write_text("mine")
    with pytest.raises(ConfigError, match="exists: pass --overwrite"):
        new_file(f, overwrite=False)
    assert new_file(f, overwrite=True) == f
    link = tmp_path / "link.csv"
    link.symlink_to(f)
    with pytest.raises(ConfigError, match="symbolic link"):
        new_file(link, overwrite=True)
    with pytest.raises(ConfigError, match="a folder"):
        new_file(tmp_path, overwrite=True)
    with pytest.raises(ConfigError, match=r"expected a \.png file"):
        new_file(f, overwrite=True, suffix=".png")


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    f = tmp_path / "a.csv"
    f.write_text("old")

    def half(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_atomic(f, half)
    assert f.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]


def test_trace_overwrite_never_writes_through_a_link(tmp_path):
    """`trace synth --overwrite --out LINK`: refused; the file the link points at stays."""
    target = tmp_path / "thesis.csv"
    target.write_text("precious")
    link = tmp_path / "trace.csv"
    link.symlink_to(target)
    assert main([*SYNTH, "--overwrite", "--out", str(link)]) == 2
    assert target.read_text() == "precious" and link.is_symlink()
    out = tmp_path / "t.csv"
    assert main([*SYNTH, "--out", str(out)]) == 0
    first = out.read_text()
    assert main([*SYNTH, "--out", str(out)]) == 2  # exists
    assert main([*SYNTH, "--overwrite", "--out", str(out)]) == 0
    assert out.read_text() == first
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]


def test_plot_replaces_a_png_only_with_overwrite(tmp_path):
    """`plot RUN --out x.png` over an existing PNG is refused; a run's own run.png is
    redrawn."""
    from fsl_opt.federation import runfolder

    run = tmp_path / "run"
    runfolder.prepare(run, "run")
    rec = '"round_latency_s": 1.0, "total_energy_j": 2.0, "rank": 4, "ranks": [4, 4]'
    (run / "log.jsonl").write_text(
        f'{{"round": 0, "test_accuracy": 0.25}}\n{{"round": 1, "test_accuracy": 0.5, {rec}}}\n'
    )
    png = tmp_path / "figure.png"
    png.write_bytes(b"a user's figure")
    assert main(["plot", str(run), "--out", str(png)]) == 2
    assert png.read_bytes() == b"a user's figure"
    assert main(["plot", str(run), "--out", str(png), "--overwrite"]) == 0
    assert png.read_bytes().startswith(b"\x89PNG")
    (run / "run.png").write_bytes(b"old drawing")
    assert main(["plot", str(run)]) == 0
    assert (run / "run.png").read_bytes().startswith(b"\x89PNG")
