"""Every `fsl-opt ...` command line shown in the README and docs/ is checked against the
command line as it is: parsed by fsl-opt's own parser, its run settings built and
validated, its experiment or benchmark options checked against the callee, and the cheap
ones (solving a shipped SYSTEM.toml or a preset) run; a renamed flag or setting fails here."""

import io
import re
import shlex
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch

from fsl_opt.cli import build_parser, main
from fsl_opt.errors import ConfigError
from fsl_opt.learning.local import bf16_support

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def shell_blocks(text: str) -> list[str]:
    """The bodies of the ```bash / ```sh / ```console blocks, fences read line by line."""
    blocks, body, lang = [], [], None
    for line in text.splitlines():
        if line.startswith("```"):
            if lang is None:
                lang = line[3:].strip()
                body = []
            else:
                if lang in ("bash", "sh", "console"):
                    blocks.append("\n".join(body))
                lang = None
        elif lang is not None:
            body.append(line)
    return blocks


def documented_commands() -> list[tuple[str, str]]:
    """(page, command line) for every fsl-opt line in a shell block, continuations joined."""
    out = []
    for page in PAGES:
        for block in shell_blocks(page.read_text()):
            text = block.replace("\\\n", " ")
            for line in text.splitlines():
                line = line.strip()
                for part in re.split(r"&&|\|", line):
                    part = part.strip()
                    if part.startswith("fsl-opt "):
                        command = part.split(" #")[0].strip()
                        out.append((page.name, command))
        for span in INLINE.findall(page.read_text()):
            words = span.split()
            # A command line, not a mention of a command or a pattern with placeholders.
            if len(words) >= 3 and "[" not in span and not any(PLACEHOLDER.match(w) for w in words):
                out.append((page.name, span))
    return out


#: `fsl-opt ...` in running text.
INLINE = re.compile(r"`(fsl-opt [^`]+)`")
#: A word standing for the reader's own value: RUN, NAME, FOLDER, WHAT ...
PLACEHOLDER = re.compile(r"^[A-Z][A-Z_]+$")


COMMANDS = documented_commands()


def test_the_docs_show_commands():
    """The extraction finds what the pages show (so the test below cannot pass empty)."""
    pages = {page for page, _ in COMMANDS}
    assert {"README.md", "solving.md", "training.md", "experiments.md"} <= pages
    assert len(COMMANDS) >= 40


@pytest.mark.parametrize(("page", "command"), COMMANDS, ids=[c for _, c in COMMANDS])
def test_documented_command_is_valid(page, command, tmp_path, monkeypatch):
    """Parses; a train line builds its RunConfig; an experiment or bench line passes its
    options check; a solve line on a shipped file or a preset runs (optimal, infeasible, or
    stopped at a limit)."""
    argv = shlex.split(command)[1:]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code == 0 and "--help" in argv:
            return  # printed its help
        pytest.fail(f"{page}: `{command}` does not parse (exit {exc.code})")
    if args.command == "train":
        from fsl_opt.cli.flags import overrides_from_args
        from fsl_opt.federation.settings import RunConfig

        RunConfig().replace(**overrides_from_args(args))
    elif args.command == "experiment" and args.name:
        from experiments import registry

        options = {"quick": args.quick or None, "seeds": None, "overrides": None}
        try:
            registry.check("experiment", args.name, options)
        except ConfigError as exc:  # the committed results' bf16, on a CPU without it
            if "no native bf16" not in str(exc) or not bf16_support(torch.device("cpu")):
                raise
    elif args.command == "bench":
        from experiments import registry

        parts = tuple(args.parts.split(",")) if args.parts else None
        options = {"quick": args.quick or None, "seed": args.seed, "parts": parts}
        registry.check("bench", args.what, options)
    elif args.command == "solve":
        if args.system is not None and not (ROOT / args.system).is_file():
            return  # a user's own file
        monkeypatch.chdir(ROOT)
        with redirect_stdout(io.StringIO()):
            code = main(argv)
        assert code in (0, 3, 4), f"{page}: `{command}` exited {code}"


#: Pages whose Python blocks are complete programs (architecture.md shows sketches of new
#: plug-ins, with ``...`` for the body a reader writes).
RUNNABLE = [p for p in PAGES if p.name != "architecture.md"]


def test_python_blocks_run():
    """Every ```python block of the README and the guides executes."""
    ran = 0
    for page in RUNNABLE:
        for code in re.findall(r"```python\n(.*?)```", page.read_text(), re.S):
            exec(compile(code, page.name, "exec"), {})
            ran += 1
    assert ran >= 2


def test_example_files_load():
    """examples/system.toml and examples/run.toml are valid."""
    from fsl_opt.federation.settings import load_config
    from fsl_opt.problem.system_file import load_system

    assert load_system(ROOT / "examples" / "system.toml").n_devices == 3
    assert load_config(ROOT / "examples" / "run.toml").partition == "dirichlet"
