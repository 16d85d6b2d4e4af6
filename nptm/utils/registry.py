"""One generic registry for plug-ins (criteria, pruners, schedules, models, datasets, study strategies).

A plug-in registers itself under its name in the file that defines it; everything else (the CLI's choices,
error messages, tests, the README) reads the names from the registry. On the first lookup the registry
imports every module of its ``package`` (so adding a plug-in is adding one file there) and then loads the
plug-ins of third-party packages from its entry point group.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownChoice(KeyError, ValueError):
    """A name that is not registered; the message lists the valid choices."""

    def __str__(self) -> str:
        return str(self.args[0])


def discover(package: str) -> None:
    """Import every public module of ``package`` (not ``__main__``, not ``_private``, not sub-packages)."""
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.ispkg and not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


class Registry(Generic[T]):
    def __init__(self, kind: str, entry_point_group: str | None = None, package: str | None = None):
        self.kind, self.group, self.package = kind, entry_point_group, package
        self._items: dict[str, T] = {}
        self._position: dict[str, float] = {}
        self._loaded = entry_point_group is None and package is None
        self._loading = False

    def register(self, name: str, obj: T | None = None, *, position: float = float("inf")) -> Callable[[T], T] | T:
        """``registry.register("x", obj)`` or ``@registry.register("x")`` above a class or function.
        ``position`` orders the names (ties: registration order), e.g. the papers' order of schedules."""
        def add(o: T) -> T:
            if name in self._items and self._items[name] is not o:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = o
            self._position[name] = position
            return o
        return add if obj is None else add(obj)

    def _load(self) -> None:
        if self._loaded or self._loading:
            return
        self._loading = True
        try:
            if self.package:
                discover(self.package)
            for ep in entry_points(group=self.group) if self.group else ():
                if ep.name not in self._items:
                    self._items[ep.name] = ep.load()
                    self._position[ep.name] = float("inf")
            self._loaded = True
        finally:
            self._loading = False

    def __getitem__(self, name: str) -> T:
        self._load()
        try:
            return self._items[name]
        except KeyError:
            raise UnknownChoice(f"unknown {self.kind} {name!r}; choices: {', '.join(self.names())}") from None

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def names(self) -> tuple[str, ...]:
        self._load()
        order = {n: i for i, n in enumerate(self._items)}
        return tuple(sorted(self._items, key=lambda n: (self._position[n], order[n])))

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._items[n]) for n in self.names()]
