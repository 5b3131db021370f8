"""The run settings as command-line flags: one flag per setting, generated from its
declaration (:mod:`fsl_opt.federation.settings`), for every command that takes settings
(``train`` all of them, ``plan`` the planner's, ``solve`` one round's, ``experiment`` and
``calibrate`` a few). A flag's type, help text, range, choices, section group and old
spellings all come from the field; its value is checked as the run checks it."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Callable, Iterable
from typing import Any

from fsl_opt.errors import ConfigError
from fsl_opt.federation.fields import SECTIONS
from fsl_opt.federation.settings import (
    FIELDS,
    OWNERS,
    UNSET,
    RunConfig,
    allowed_types,
    choices_of,
    per_device_numbers,
)
from fsl_opt.registry import Registry


def _registry_of(f: dataclasses.Field[Any]) -> Registry[Any] | None:
    """The registry a setting's choices come from (None: fixed choices, or none)."""
    choices = f.metadata.get("described_by") or f.metadata.get("choices")
    table = choices() if callable(choices) else None
    return table if isinstance(table, Registry) else None


class DeprecatedFlag(argparse.Action):
    """An old spelling of a flag: taken as the new one, with one note on stderr saying
    which to write (the old one goes in the next release)."""

    def __init__(self, *args: Any, new: str, **kwargs: Any) -> None:
        self.new = new
        super().__init__(*args, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(
            f"fsl-opt: note: {option_string} is deprecated and goes in the next release; "
            f"write {self.new}",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


def field_help(f: dataclasses.Field[Any]) -> str:
    """A setting's help text; for a setting whose choices are a registry, each registered
    name with its summary (read from the registry, so a new plug-in is described too)."""
    table = _registry_of(f)
    if table is not None:
        return f"{f.metadata['help']}. {table.table('; ')}"
    return str(f.metadata["help"])


def _parse(name: str, kind: type, optional: bool, many: bool = False) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        if optional and text.lower() == UNSET:
            return None
        if many and "," in text:
            try:
                return per_device_numbers(name, text)
            except ConfigError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {kind.__name__}{' or none' if optional else ''}, got {text!r}"
            ) from None

    parse.__name__ = name  # argparse names the type in its message
    return parse


def add_arguments(
    parser: argparse.ArgumentParser,
    only: Iterable[str] | None = None,
    shown_defaults: dict[str, Any] | None = None,
) -> None:
    """One flag per :class:`RunConfig` field (``--samples-per-device``, ...), from its metadata
    (``only``: these fields alone; ``shown_defaults``: the defaults of a command whose own
    differ from a run's, for the help texts).

    Flags default to "not given" (absent from the parsed namespace), so only the flags a
    user typed override the config file.
    """
    hints = typing.get_type_hints(RunConfig)
    groups: dict[Any, Any] = {}
    wanted = None if only is None else set(only)
    fields = sorted(
        dataclasses.fields(RunConfig), key=lambda f: list(SECTIONS).index(f.metadata["section"])
    )
    for f in fields:  # by section (a stable sort: each section's settings in their order)
        if wanted is not None and f.name not in wanted:
            continue
        key = OWNERS.get(f.name) or f.metadata["section"]
        if key not in groups:
            title = SECTIONS[key] if isinstance(key, str) else f"options of {key[0]} {key[1]}"
            groups[key] = parser.add_argument_group(title)
        group = groups[key]
        allowed = allowed_types(f.name, hints)
        kind = next(t for t in allowed if t is not type(None))
        optional = type(None) in allowed
        flag = "--" + f.name.replace("_", "-")
        within = f.metadata["within"]
        bounds = f"; {within}" if within is not None else ""
        from_registry = _registry_of(f) is not None and f.metadata["choices"] is not None
        default = (shown_defaults or {}).get(f.name, f.default)
        help_text = f"{field_help(f)} (default: {_shown(default)}{bounds})"
        if kind is bool:
            names = [flag, *(s for s in f.metadata["flags"] if not s.startswith("--no-"))]
            group.add_argument(
                *names,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
            for alias in (s for s in f.metadata["flags"] if s.startswith("--no-")):
                group.add_argument(
                    alias,
                    dest=f.name,
                    action="store_false",
                    default=argparse.SUPPRESS,
                    help=argparse.SUPPRESS,
                )
            continue
        parse = _parse(
            kind.__name__, kind, optional, any(typing.get_origin(t) is tuple for t in allowed)
        )
        group.add_argument(
            flag,
            *f.metadata["flags"],
            dest=f.name,
            type=parse,
            default=argparse.SUPPRESS,
            metavar=kind.__name__.upper(),
            help=help_text
            + (
                f"; one of: {', '.join(c)}"
                if (c := choices_of(f)) is not None and not from_registry
                else ""
            ),
        )
        for old in f.metadata["deprecated"]:
            group.add_argument(
                old,
                dest=f.name,
                type=parse,
                default=argparse.SUPPRESS,
                action=DeprecatedFlag,
                new=flag,
                help=argparse.SUPPRESS,
            )


def _shown(value: Any) -> str:
    return UNSET if value is None else str(value)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line (only the flags that were typed)."""
    return {name: getattr(args, name) for name in FIELDS if hasattr(args, name)}


def given_settings(
    args: argparse.Namespace, names: Iterable[str], defaults: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The settings ``names`` of a command that makes no run: a run's defaults, then the
    command's own ``defaults``, then the flags typed, each checked alone as a run checks it."""
    from fsl_opt.federation.settings import check_settings

    run = RunConfig()
    values = {name: getattr(run, name) for name in names}
    return {**values, **(defaults or {}), **check_settings(overrides_from_args(args))}
