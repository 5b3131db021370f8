"""One shape for every kind of plug-in: a :class:`Registry` of named :class:`Entry` rows.

Solvers, channel models, aggregators, backends, whole-run policies, objectives, data sets,
precisions, experiments and benchmarks are each one registry of this shape. An entry has a
name (what a user types), a target (the object, or ``"package.module:attr"`` imported only
when it is used, so that checking a run's settings never loads torch or Flower), one line
of summary, and capabilities (flags such as ``exact`` or ``one_rank`` that other code asks
about instead of listing names). Setting choices, ``--help`` texts and error messages read
the names from the registry, so adding a plug-in is one module and one registration line.

Examples
--------
>>> colours = Registry("colour", setting="colour", capabilities=("warm",))
>>> _ = colours.register("red", "builtins:str", "a warm one", warm=True)
>>> _ = colours.register("blue", "builtins:str", "a cold one")
>>> colours.names(), colours.with_capability("warm")
(('red', 'blue'), ('red',))
>>> colours.check("green")
Traceback (most recent call last):
...
fsl_opt.errors.ConfigError: colour = 'green': expected one of red, blue
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from fsl_opt.errors import ConfigError

T = TypeVar("T")
F = TypeVar("F")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered plug-in.

    Attributes
    ----------
    name : str
        Its name in settings, flags and records.
    target : str or object or None
        ``"package.module:attr"`` (or ``"package.module"`` for a module), imported by
        :meth:`load`; or the object itself; or None for a plug-in that is a name only (an
        objective, a precision: the code that knows it reads the name).
    summary : str
        One line for ``--help`` and the docs.
    capabilities : frozenset of str
        What it can do, from the registry's declared capabilities.
    options : type or None
        The plug-in's own settings (for the federation's plug-ins, a
        :class:`~fsl_opt.federation.fields.PluginOptions` dataclass that the run
        configuration composes); None: it has none.
    """

    name: str
    target: Any
    summary: str
    capabilities: frozenset[str] = field(default_factory=frozenset)
    options: Any = None

    def has(self, capability: str) -> bool:
        """Whether it was registered with ``capability``."""
        return capability in self.capabilities

    def load(self) -> T:
        """The registered object (imported now if it was named by its path)."""
        if not isinstance(self.target, str):
            if self.target is None:
                raise TypeError(f"{self.name!r} is a name only; there is nothing to load")
            loaded: T = self.target
            return loaded
        module, _, attr = self.target.partition(":")
        found: Any = importlib.import_module(module)
        if attr:
            found = getattr(found, attr)
        return found


class Registry(Mapping[str, Entry[T]]):
    """Every plug-in of one kind by name, in registration order.

    Parameters
    ----------
    kind : str
        What one entry is ("solver", "aggregator"), for messages.
    setting : str, optional
        The run setting or flag that names one (``method``, ``aggregation``): an unknown
        name is refused as ``setting = 'x': expected one of ...``. Default: ``kind``.
    capabilities : tuple of str
        The capabilities an entry may declare; any other is refused at registration.
    reserved : tuple of str
        Names no entry may take (a solver's ``auto``).
    """

    def __init__(
        self,
        kind: str,
        *,
        setting: str | None = None,
        capabilities: tuple[str, ...] = (),
        reserved: tuple[str, ...] = (),
    ) -> None:
        self.kind = kind
        self.setting = setting or kind
        self.capabilities = capabilities
        self.reserved = reserved
        self._entries: dict[str, Entry[T]] = {}

    # -- registering -------------------------------------------------------------------
    def register(
        self, name: str, target: Any, summary: str, *, options: Any = None, **capabilities: bool
    ) -> Entry[T]:
        """Add ``name``; ``capabilities`` are keyword flags (``exact=True``); ``options``:
        the class of its own settings, if it has any."""
        if name in self._entries or name in self.reserved:
            raise ValueError(f"{self.kind} {name!r} is registered twice (or is reserved)")
        unknown = sorted(set(capabilities) - set(self.capabilities))
        if unknown:
            raise ValueError(
                f"{self.kind} {name!r}: no capability {', '.join(unknown)} (a {self.kind} "
                f"may declare {', '.join(self.capabilities) or 'none'})"
            )
        entry: Entry[T] = Entry(
            name, target, summary, frozenset(c for c, on in capabilities.items() if on), options
        )
        self._entries[name] = entry
        return entry

    def add(self, name: str, summary: str, **capabilities: bool) -> Callable[[F], F]:
        """Decorator form of :meth:`register`: the decorated object is the target."""

        def decorate(obj: F) -> F:
            self.register(name, obj, summary, **capabilities)
            return obj

        return decorate

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests that register a toy plug-in clean up with this)."""
        del self._entries[name]

    # -- reading -----------------------------------------------------------------------
    def __getitem__(self, name: str) -> Entry[T]:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> tuple[str, ...]:
        """Every name, in registration order."""
        return tuple(self._entries)

    def with_capability(self, capability: str) -> tuple[str, ...]:
        """The names registered with ``capability``."""
        if capability not in self.capabilities:
            raise ValueError(f"a {self.kind} has no capability {capability!r}")
        return tuple(n for n, e in self._entries.items() if e.has(capability))

    def check(self, name: str) -> Entry[T]:
        """The entry ``name``, or a :class:`ConfigError` naming the setting and the choices."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ConfigError(
                f"{self.setting} = {name!r}: expected one of {', '.join(self._entries)}"
            ) from None

    def load(self, name: str) -> T:
        """The object registered as ``name`` (checked, then imported)."""
        return self.check(name).load()

    def help(self, conjunction: str = "or") -> str:
        """The names as prose for a help text: ``a, b or c``."""
        names = list(self._entries)
        if len(names) <= 1:
            return "".join(names)
        return f"{', '.join(names[:-1])} {conjunction} {names[-1]}"

    def table(self, separator: str = "\n") -> str:
        """Every entry as ``name: summary``, one a line (or joined by ``separator``: the
        ``--help`` texts take ``"; "``)."""
        return separator.join(f"{n}: {e.summary}" for n, e in self._entries.items())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"
