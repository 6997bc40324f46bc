"""Name -> constructor registries, one per extension point (backbone, head, loss, sampler, profile).

A config names each part of a method by a string; the registry turns the string into an object and
fails with a "did you mean" hint when the name is unknown; before that, the first miss of any
registry loads installed packages' ``longtail.plugins`` entry points (``longtail/plugins.py``).
A namespace (``timm/...``) hands the names under a prefix to another library's own lookup.
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
        self._namespaces: dict[str, Callable[[str], Callable[..., Any]]] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(constructor: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = constructor
            return constructor

        return decorator

    def register_namespace(self, prefix: str, resolve: Callable[[str], Callable[..., Any]]) -> None:
        """Names ``prefix/<name>`` come from another library (``timm/resnet50``): too many to
        list, so ``resolve(name)`` looks each one up and returns its constructor, or raises
        KeyError with a hint when the library has no such name."""
        if prefix in self._namespaces:
            raise ValueError(f"{self.kind} namespace '{prefix}' is registered twice")
        self._namespaces[prefix] = resolve

    def names(self) -> list[str]:
        """The registered names (a namespace's names are not listed: see ``namespaces``)."""
        return sorted(self._entries)

    def namespaces(self) -> list[str]:
        return sorted(self._namespaces)

    def __contains__(self, name: str) -> bool:
        return self.hint(name) is None

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def hint(self, name: str) -> str | None:
        """None when ``name`` is known; else why not, as a "did you mean" hint."""
        prefix, slash, rest = name.partition("/")
        if slash and prefix in self._namespaces:
            try:
                self._namespaces[prefix](rest)
            except KeyError as err:
                return str(err.args[0]) if err.args else "no such name"
            return None
        if name in self._entries:
            return None
        if _load_plugins():  # an installed package's entry point may register it
            return self.hint(name)
        hint = did_you_mean(name, self.names())
        if self._namespaces and not hint.startswith("did you mean"):
            hint += "; or " + ", ".join(f"{p}/<name>" for p in self.namespaces())
        return hint

    def get(self, name: str) -> Callable[..., Any]:
        prefix, slash, rest = name.partition("/")
        if slash and prefix in self._namespaces:
            try:
                return self._namespaces[prefix](rest)
            except KeyError as err:
                raise KeyError(f"unknown {self.kind} '{name}': {err.args[0]}") from None
        if name not in self._entries:
            hint = self.hint(name)  # the first miss loads the plugins' entry points
            if hint is not None:
                raise KeyError(f"unknown {self.kind} '{name}': {hint}")
            return self.get(name)  # a plugin has just registered it
        return self._entries[name]

    def option_error(self, name: str, options: dict[str, Any], context: Any = ()) -> str | None:
        """None when ``name``'s constructor takes every key of ``options``; else why not.
        ``context``: the names the caller fills in itself (not the user's to set)."""
        constructor = self.get(name)
        params = inspect.signature(constructor).parameters
        if isinstance(constructor, type) and constructor.__init__ is _module_init():
            # A module without an __init__ of its own shows nn.Module's (*args, **kwargs), yet
            # takes no option: a stale `loss.args` after `--set loss.name=ce` is refused here.
            params = {}
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return None
        for key in options:
            if key not in params:
                valid = [p for p in params if p not in context]
                hint = did_you_mean(key, valid) if valid else "it takes none"
                return f"{self.kind} '{name}' has no option '{key}': {hint}"
        return None

    def create(self, name: str, context: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """Build ``name`` with ``kwargs``; values from ``context`` (class counts, feature size, ...)
        are passed only to constructors whose signature names them, so methods that do not need
        class counts never see them."""
        constructor = self.get(name)
        error = self.option_error(name, kwargs, context or {})
        if error is not None:
            raise TypeError(error)
        params = inspect.signature(constructor).parameters
        for key, value in (context or {}).items():
            if key in params and key not in kwargs:
                kwargs[key] = value
        return constructor(**kwargs)


def _module_init() -> Callable[..., Any]:
    import torch

    return torch.nn.Module.__init__


def _load_plugins() -> bool:
    """The ``longtail.plugins`` entry points, loaded on the first miss of any registry."""
    from longtail.plugins import load_entry_points

    return load_entry_points()


BACKBONES = Registry("backbone")
HEADS = Registry("head")
LOSSES = Registry("loss")
SAMPLERS = Registry("sampler")
