"""mkdocs hook: the docs link to repository files outside docs/ (results, examples) with
paths that work on a code host (``../experiments/results/fig2/fig2.png``); the site gets a
copy of each linked file under ``repo/`` and the links are rewritten to it. A link to a
file that does not exist is left alone, so ``mkdocs build --strict`` reports it."""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File

LINK = re.compile(r"\]\(\.\./([^)#\s]+)")
ROOT = Path(__file__).resolve().parents[1]


def _targets(docs_dir: Path) -> set[str]:
    found: set[str] = set()
    for page in docs_dir.glob("*.md"):
        found |= {m for m in LINK.findall(page.read_text()) if (ROOT / m).is_file()}
    return found


def on_files(files, config):  # type: ignore[no-untyped-def]
    for rel in sorted(_targets(Path(config["docs_dir"]))):
        files.append(File.generated(config, f"repo/{rel}", abs_src_path=str(ROOT / rel)))
    return files


def on_page_markdown(markdown, page, config, files):  # type: ignore[no-untyped-def]
    def swap(m: re.Match[str]) -> str:
        rel = m.group(1)
        return f"](repo/{rel}" if (ROOT / rel).is_file() else m.group(0)

    return LINK.sub(swap, markdown)
