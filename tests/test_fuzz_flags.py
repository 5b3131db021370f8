"""Every flag of every command, with hostile values: never a traceback, never a write
outside the named output, never a deleted or changed file that fsl-opt did not create.

The flags are read from the parser itself, so a new command or flag is fuzzed the day it
is added. Each case runs ``fsl-opt`` in-process in a sandbox folder holding a user's file
(and, where a command reads one, a small run folder); the long work behind a command (the
rounds of ``train``, the planner of ``plan``, an experiment's or a benchmark's runs,
calibration timing) is replaced by a stand-in that refuses with a known line, so each
case checks everything up to the work (parsing, settings, input files, the output folder)
in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from fsl_opt.cli import build_parser, main
from fsl_opt.errors import ConfigError

#: Hostile values: not UTF-8, empty, huge, negative, not a number, the largest seed.
HOSTILE = ("\udcff\udcfe", "", "9" * 400, "-1", "nan", str(2**63 - 1))
REACHED = "fuzz: the work was reached"


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    """Every (sub)command's parser by its words, e.g. "trace synth"."""
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(prefix: str, parser: argparse.ArgumentParser) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            found[prefix] = parser
        for action in subs:
            for name, sub in action.choices.items():
                walk(f"{prefix} {name}".strip(), sub)

    walk("", build_parser())
    return found


def _valued_flags(parser: argparse.ArgumentParser) -> list[str]:
    return [
        a.option_strings[0]
        for a in parser._actions
        if a.option_strings and a.nargs != 0 and not isinstance(a, argparse._HelpAction)
    ]


#: Each command's arguments besides the flag under test: cheap, and naming the sandbox's
#: output ``OUT`` (its run folder ``RUN``).
BASE = {
    "solve": ["--preset", "paper"],
    "bench": ["solvers", "--quick", "--out", "OUT"],
    "train": ["--model", "tiny", "--rounds", "1", "--quiet", "--no-plot", "--out", "OUT"],
    "plan": ["--rounds", "1", "--quiet", "--no-plot", "--out", "OUT"],
    "experiment": ["fig2", "--quick", "--out", "OUT"],
    "evaluate": ["RUN"],
    "plot": ["RUN", "--out", "OUT/p.png"],
    "trace synth": ["--devices", "2", "--rounds", "2", "--out", "OUT/t.csv"],
    "trace fedscale": ["--devices", "2", "--rounds", "2", "--round-s", "60", "--out", "OUT/f.csv"],
    "calibrate": ["--quick", "--out", "OUT"],
    "adopt": ["RUN"],
    "credentials": ["--host", "localhost", "--nodes", "1", "--out", "OUT"],
    "fit-accuracy": ["RUN", "--out", "OUT/a.json"],
    "gateway": [
        "--creds",
        "RUN",
        "--listen",
        "127.0.0.2:9443",
        "--superlink",
        "127.0.0.1:8000",
        "--out",
        "OUT",
    ],
}

CASES = [
    (command, flag, value)
    for command, parser in _subcommands().items()
    for flag in _valued_flags(parser)
    for value in HOSTILE
]


def test_every_command_is_fuzzed():
    """A new command needs its cheap base arguments here (the fuzz then covers its flags)."""
    assert set(_subcommands()) == set(BASE)
    assert len(CASES) > 600


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A working folder with a user's file and a small finished run; the work stubbed."""
    from experiments import calibrate, common
    from fsl_opt.federation import loop, plan_run, runfolder

    def reached(*args, **kwargs):
        raise ConfigError(REACHED)

    monkeypatch.setattr(loop, "_rounds", reached)
    monkeypatch.setattr(plan_run, "plan_rounds", reached)
    monkeypatch.setattr(common, "run_all", reached)
    monkeypatch.setattr(calibrate, "main", reached)
    from experiments import registry

    monkeypatch.setattr(registry, "run", reached)
    monkeypatch.setenv("FSL_OPT_CACHE", str(tmp_path / "cache"))
    # a hub id (``--model nan``) fails at once instead of retrying a network that is not there
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import
    monkeypatch.chdir(tmp_path)
    (tmp_path / "thesis.tex").write_text("a user's file")
    run = tmp_path / "run"
    runfolder.prepare(run, "run")
    (run / "config.toml").write_text('model = "tiny"\n')
    rec = '"round_latency_s": 1.0, "total_energy_j": 2.0, "rank": 4, "ranks": [4, 4]'
    (run / "log.jsonl").write_text(
        json.dumps({"round": 0, "test_accuracy": 0.25})
        + "\n"
        + f'{{"round": 1, "test_accuracy": 0.5, {rec}}}\n'
    )
    return tmp_path


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and "cache" not in p.relative_to(root).parts
    }


def _id(case: tuple[str, str, str]) -> str:
    command, flag, value = case
    shown = {HOSTILE[0]: "not-utf8", "": "empty", HOSTILE[2]: "huge"}.get(value, value)
    return f"{command}{flag}={shown}"


@pytest.mark.parametrize(("command", "flag", "value"), CASES, ids=[_id(c) for c in CASES])
def test_a_hostile_flag_value(sandbox, capsys, command, flag, value):
    before = _files(sandbox)
    words = [
        {
            "OUT": "out",
            "RUN": "run",
            "OUT/p.png": "out/p.png",
            "OUT/t.csv": "out/t.csv",
            "OUT/f.csv": "out/f.csv",
            "OUT/a.json": "out/a.json",
        }.get(w, w)
        for w in BASE[command]
    ]
    # the flag under test replaces the base's own value of it
    if flag in words:
        i = words.index(flag)
        del words[i : i + 2]
    argv = [*command.split(), *words, f"{flag}={value}" if value.startswith("-") else flag]
    if not value.startswith("-"):
        argv.append(value)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, (argv, err)
    assert code in (0, 1, 2, 3), (argv, code, err)
    if code:  # one error line (notes, such as a deprecated spelling's, are not errors)
        ours = [x for x in err.splitlines() if x.startswith("fsl-opt") and ": note:" not in x]
        assert len(ours) == 1, (argv, err)
    after = _files(sandbox)
    for name, data in before.items():  # nothing of the user's (or the run's) changed
        if not name.startswith("out"):
            assert after.get(name) == data, (argv, name)
    named = "out" if flag != "--out" or not value else value  # what the case names
    outside = [n for n in after if n not in before and not n.startswith(("out", named.rstrip("/")))]
    assert not outside, (argv, outside)


def test_the_fuzz_reaches_the_work(sandbox, capsys):
    """The stand-ins are what stops a valid case (else the fuzz would test nothing past
    parsing)."""
    assert main(["train", *BASE["train"][:-1], "out"]) == 2
    assert REACHED in capsys.readouterr().err
    assert os.path.isdir("out")
