"""The user's own parts: modules that register heads, losses, backbones or samplers
(``@HEADS.register("my_head")``), imported before a config's names are checked.

Three ways in:

- ``longtail train --import my_pkg.heads --import ./my_head.py`` (repeatable), which adds them
  to the config's top-level ``imports:`` list;
- ``imports: [my_pkg.heads, plugins/my_head.py]`` in a YAML config;
- the entry-point group ``longtail.plugins`` of an installed package, loaded once, lazily, the
  first time a registry lookup misses.

A run's ``config.yaml`` keeps its ``imports`` (``.py`` paths made absolute), and
``load_run_config`` imports them again, so eval, sweep, predict, export and resume find the parts.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
import traceback
import warnings
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from longtail.config import ConfigError

ENTRY_POINT_GROUP = "longtail.plugins"

_imported: dict[str, ModuleType] = {}  # spec (absolute path or module name) -> module
_entry_points_loaded = False


def is_file_spec(spec: str) -> bool:
    """A ``.py`` path (``my_head.py``, ``plugins/x.py``), as opposed to a dotted module name."""
    return spec.endswith(".py") or "/" in spec or os.sep in spec


def resolve_spec(spec: str, relative_to: Path | None = None) -> str:
    """The form a config records: ``.py`` paths absolute (relative ones are looked up in
    ``relative_to`` first, e.g. the YAML file's folder, then in the current directory), so the
    saved run imports the same file from anywhere; module names unchanged."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"imports: expected a module name or a .py file, got {spec!r}")
    spec = spec.strip()
    if not is_file_spec(spec):
        return spec
    path = Path(spec).expanduser()
    if not path.is_absolute() and relative_to is not None and (relative_to / path).is_file():
        path = relative_to / path
    return str(path.resolve())


def import_plugins(specs: Iterable[str]) -> None:
    """Import every spec of a config's ``imports`` (each once per process)."""
    for spec in specs:
        import_plugin(spec)


def import_plugin(spec: str) -> ModuleType:
    """Import a dotted module name or a ``.py`` file; any failure is one ConfigError line."""
    key = resolve_spec(spec)
    if key in _imported:
        return _imported[key]
    module = _import_file(Path(key)) if is_file_spec(key) else _import_module(key)
    _imported[key] = module
    return module


def _where(err: BaseException) -> str:
    """``file:line`` of the innermost frame of an error raised by plugin code."""
    frames = traceback.extract_tb(err.__traceback__)
    if isinstance(err, SyntaxError) and err.filename:
        return f"{err.filename}:{err.lineno}"
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"


def _failed(spec: str, err: BaseException) -> ConfigError:
    # One line, but with the place in the user's code, so a bug in it can be found.
    message = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return ConfigError(f"imports: '{spec}' failed: {type(err).__name__}"
                       f"{': ' + message if message else ''} ({_where(err)})")


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise ConfigError(f"imports: file '{path}' does not exist")
    # A name of its own per file: two plugins called heads.py never replace each other, and
    # an installed module of the same name is not shadowed.
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    name = f"longtail_plugin_{path.stem.replace('-', '_')}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"imports: '{path}' cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before exec: dataclasses and pickling look the module up
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        raise _failed(str(path), err) from None
    return module


def _missing(err: ModuleNotFoundError, name: str) -> bool:
    """The module asked for (or a package above it) is absent, not one that it imports."""
    return err.name is not None and (name == err.name or name.startswith(err.name + "."))


def _try_import(name: str) -> ModuleType | None:
    """The module, or None when it is not there; an error inside it is a one-line failure."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if not _missing(err, name):
            raise _failed(name, err) from None
    except Exception as err:
        raise _failed(name, err) from None
    return None


def _import_module(name: str) -> ModuleType:
    if not all(part.isidentifier() for part in name.split(".")):
        raise ConfigError(f"imports: '{name}' is neither a dotted module name nor a .py file")
    module = _try_import(name)
    # The ``longtail`` console script does not put the current directory on sys.path (python -m
    # does): a module next to the user's config would not be found. Look there too.
    cwd = os.getcwd()
    if module is None and cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
        importlib.invalidate_caches()  # the finders may have listed the folder before
        module = _try_import(name)
    if module is not None:
        return module
    raise ConfigError(f"imports: no module named '{name}' on the Python path or in the current "
                      "directory (install it, add its folder to PYTHONPATH, or give the path of "
                      "its .py file)")


def load_entry_points() -> bool:
    """Load the ``longtail.plugins`` entry points of installed packages, the first time only;
    True when this call loaded them (a registry then looks its name up again). An entry point
    names a module (importing it registers its parts) or a function, called with no arguments.
    A broken plugin warns and is skipped: the name looked up may not be its own."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return False
    _entry_points_loaded = True
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry.load()
            if entry.attr:
                loaded()
        except Exception as err:  # a plugin's bug must not stop runs that do not use it
            warnings.warn(f"longtail: plugin entry point '{entry.name}' ({entry.value}) failed "
                          f"to load: {type(err).__name__}: {err}", stacklevel=2)
    return True
