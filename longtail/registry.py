"""Name -> constructor registries, one per extension point (backbone, head, loss, sampler, profile).

A config names each part of a method by a string; the registry turns the string into an object and
fails with a "did you mean" hint when the name is unknown.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T", bound=Callable[..., Any])


def did_you_mean(name: str, choices: list[str]) -> str:
    """A short hint naming the closest valid choice, or listing all of them."""
    close = difflib.get_close_matches(name, choices, n=1)
    if close:
        return f"did you mean '{close[0]}'?"
    return "valid: " + ", ".join(sorted(choices))


class Registry:
    """Maps names to constructors; ``create`` passes context values a constructor names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(constructor: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = constructor
            return constructor

        return decorator

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._entries:
            raise KeyError(f"unknown {self.kind} '{name}': {did_you_mean(name, self.names())}")
        return self._entries[name]

    def create(self, name: str, context: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """Build ``name`` with ``kwargs``; values from ``context`` (class counts, feature size, ...)
        are passed only to constructors whose signature names them, so methods that do not need
        class counts never see them."""
        constructor = self.get(name)
        params = inspect.signature(constructor).parameters
        accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        for key in kwargs:
            if key not in params and not accepts_any:
                valid = [p for p in params if p not in (context or {})]
                raise TypeError(
                    f"{self.kind} '{name}' has no option '{key}': {did_you_mean(key, valid)}"
                )
        for key, value in (context or {}).items():
            if key in params and key not in kwargs:
                kwargs[key] = value
        return constructor(**kwargs)


BACKBONES = Registry("backbone")
HEADS = Registry("head")
LOSSES = Registry("loss")
SAMPLERS = Registry("sampler")
