"""longtail: long-tailed visual recognition (De-confound-TDE, logit adjustment and baselines)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "load_run"]

if TYPE_CHECKING:
    from longtail.predict import load_run


def __getattr__(name: str) -> Any:
    # ``longtail.load_run`` imports torch and the models on first use only, so that
    # ``import longtail`` (the CLI's --version and --help) stays light.
    if name == "load_run":
        from longtail.predict import load_run

        return load_run
    raise AttributeError(f"module 'longtail' has no attribute {name!r}")
