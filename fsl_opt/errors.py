"""Exceptions raised by fsl-opt, and the one boundary that turns a file's failure into one.

Every file fsl-opt reads or writes on a user's behalf goes through :func:`file_boundary`
(or is checked before use): an OS error (missing, unreadable, read-only, a full disk, a
name too long, not a regular file) or a format error (truncated, not JSON, not
safetensors) becomes one :class:`ConfigError` line naming the file, never a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class ConfigError(ValueError):
    """Bad input: the message names the field, the device and the value expected."""


class DataNote(UserWarning):
    """Something fsl-opt did to a user's data that they should know of (labels it read as
    one class); the command line prints it as one ``fsl-opt: note:`` line."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    return text.splitlines()[0][:200] if text else type(exc).__name__


@contextmanager
def file_boundary(path: str | os.PathLike[str], doing: str) -> Iterator[None]:
    """Run the block; an OS or format error inside it becomes ``ConfigError`` naming ``path``
    and what was being done (``"read the adapter"``, ``"write the plot"``)."""
    try:
        yield
    except ConfigError:
        raise
    except Exception as exc:  # the block reads or writes one file: any failure is the file's
        where = exc.filename if isinstance(exc, OSError) and exc.filename else path
        raise ConfigError(f"{Path(where)}: cannot {doing} ({_first_line(exc)})") from None
