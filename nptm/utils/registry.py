"""One generic registry for plug-ins (criteria, pruners, schedules, models, datasets).

A plug-in registers itself under its name where it is defined; everything else (the CLI's choices,
error messages) reads the names from the registry. Third-party packages add plug-ins through the
entry point group given to the registry, loaded on the first lookup.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownChoice(KeyError, ValueError):
    """A name that is not registered; the message lists the valid choices."""

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str, entry_point_group: str | None = None):
        self.kind, self.group = kind, entry_point_group
        self._items: dict[str, T] = {}
        self._loaded = entry_point_group is None

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """``registry.register("x", obj)`` or ``@registry.register("x")`` above a class or function."""
        def add(o: T) -> T:
            if name in self._items and self._items[name] is not o:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = o
            return o
        return add if obj is None else add(obj)

    def _load_entry_points(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for ep in entry_points(group=self.group):
            if ep.name not in self._items:
                self._items[ep.name] = ep.load()

    def __getitem__(self, name: str) -> T:
        self._load_entry_points()
        try:
            return self._items[name]
        except KeyError:
            raise UnknownChoice(f"unknown {self.kind} {name!r}; choices: {', '.join(self.names())}") from None

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def names(self) -> tuple[str, ...]:
        self._load_entry_points()
        return tuple(self._items)

    def items(self) -> list[tuple[str, T]]:
        self._load_entry_points()
        return list(self._items.items())
