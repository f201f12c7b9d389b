"""One registry mechanism for every named, pluggable kind of thing (timm's ``_registry.py``).

Models, augmentations, datasets, recipes and search spaces each keep a ``Registry`` of their
own, so they share one set of rules: registering a name twice is a developer error
(``ValueError``, raised at import), and asking for a name nobody registered is a user error
(``ConfigError`` naming the value and listing the known names).

    >>> from visionops._registry import Registry
    >>> GREETINGS = Registry("greeting")  # a Registry[Callable[[str], str]]
    >>> @GREETINGS.register("hello")  # the decorator form registers what it decorates
    ... def hello(name: str) -> str:
    ...     return f"hello {name}"
    >>> _ = GREETINGS.register("hi", lambda name: f"hi {name}")
    >>> GREETINGS.names(), GREETINGS.get("hello")("Ada")
    (['hello', 'hi'], 'hello Ada')
    >>> GREETINGS.get("howdy")
    Traceback (most recent call last):
    ...
    visionops.errors.ConfigError: unknown greeting 'howdy'; known: hello, hi
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar, overload

from visionops.errors import ConfigError

T = TypeVar("T")


class _Missing:
    pass


_MISSING = _Missing()


class Registry(Generic[T]):
    """Entries of one ``kind`` ("model", "dataset", ...) by name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, entry: T) -> T: ...

    def register(self, name: str, entry: T | _Missing = _MISSING) -> T | Callable[[T], T]:
        """Register ``entry`` under ``name`` and return it; without ``entry``, a decorator
        that registers what it decorates.

        Raises:
            ValueError: ``name`` is already registered (two entries would shadow each other).
        """
        if isinstance(entry, _Missing):

            def decorate(decorated: T) -> T:
                return self.register(name, decorated)

            return decorate
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        """The entry registered as ``name``.

        Raises:
            ConfigError: nothing is registered as ``name``; the message lists what is.
        """
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def entries(self) -> list[T]:
        """The entries, in the order of ``names()``."""
        return [self._entries[name] for name in self.names()]

    def items(self) -> list[tuple[str, T]]:
        """``(name, entry)`` pairs, in the order of ``names()``."""
        return [(name, self._entries[name]) for name in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"
