"""One rule for every registry of the package (architecture families, init modes, reduction
methods): names to entries, filled by class decorators as the modules that define them are
imported, as timm's model registry is; kept in registration order; a name registered twice is
a mistake; an unknown name is one line that lists the known ones."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TypeVar

from nar_search.models.errors import ModelError

T = TypeVar("T")


class Registry(Mapping[str, T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind  # what an entry is, in messages: "init mode"
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> None:
        if name in self._entries:
            raise ValueError(f"a {self.kind} named {name!r} is already registered")
        self._entries[name] = entry

    def remove(self, name: str) -> None:
        del self._entries[name]

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise ModelError(f"unknown {self.kind} {name!r}: choose from {', '.join(self._entries)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
