"""The README's Python example runs, and the example files load."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_blocks_run():
    """Every ```python block of the README executes."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})


def test_example_files_load():
    """examples/system.toml and examples/run.toml are valid."""
    from fsl_opt.federation.settings import load_config
    from fsl_opt.problem.system_file import load_system

    assert load_system(ROOT / "examples" / "system.toml").n_devices == 3
    assert load_config(ROOT / "examples" / "run.toml").partition == "dirichlet"
