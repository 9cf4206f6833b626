"""Build the engine from its files (policies, price overrides) and tuning, for every command.

``spendsentry replay`` and ``spendsentry worker`` both call :func:`build_engine`,
so a backtest runs the engine the worker runs. Without a path, the files of a
checkout are used when present (``streams/policies``, ``streams/prices.toml``);
the engine itself stays pure (:mod:`spendsentry.engine` reads no files).
The engine, policy and price modules are imported when first needed: the
default paths are light enough for any command to import.

>>> engine = build_engine(allowed_lateness_s=60.0)
>>> engine.config.allowed_lateness_s
60.0
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spendsentry.engine import Engine
    from spendsentry.policy import PolicySet
    from spendsentry.pricing import PriceBook

__all__ = [
    "DEFAULT_POLICIES_DIR",
    "DEFAULT_PRICES_FILE",
    "build_engine",
    "default_policies_dir",
    "default_prices_file",
    "load_policies",
    "load_prices",
]

#: Where a checkout keeps its policy files (relative to the working directory).
DEFAULT_POLICIES_DIR = Path("streams/policies")
#: Where a checkout keeps its price overrides.
DEFAULT_PRICES_FILE = Path("streams/prices.toml")


def default_policies_dir() -> Path | None:
    """``streams/policies`` if it is a directory here, else ``None``."""
    return DEFAULT_POLICIES_DIR if DEFAULT_POLICIES_DIR.is_dir() else None


def default_prices_file() -> Path | None:
    """``streams/prices.toml`` if it exists here, else ``None``."""
    return DEFAULT_PRICES_FILE if DEFAULT_PRICES_FILE.exists() else None


def load_policies(path: str | os.PathLike[str] | None = None) -> PolicySet:
    """The policies in ``path`` (a directory or file), else the default directory, else none.

    Raises
    ------
    spendsentry.policy.PolicyError
        A given path that is missing or holds an invalid policy.
    """
    from spendsentry.policy import PolicySet

    chosen = path or default_policies_dir()
    return PolicySet.load(chosen) if chosen else PolicySet.empty()


def load_prices(path: str | os.PathLike[str] | None = None) -> PriceBook:
    """The price book with the overrides in ``path``, else in the default file, else none.

    Raises
    ------
    spendsentry.errors.ConfigError
        The file cannot be read or a model's prices are invalid.
    """
    from spendsentry.pricing import PriceBook

    return PriceBook.from_file(Path(path) if path else default_prices_file())


def build_engine(
    policies: str | os.PathLike[str] | None = None,
    prices: str | os.PathLike[str] | None = None,
    *,
    allowed_lateness_s: float = 120.0,
) -> Engine:
    """An engine with the policies and price overrides found at the given paths (or the defaults).

    Parameters
    ----------
    policies : path, optional
        Policy directory or file (default: ``streams/policies`` when present).
    prices : path, optional
        Price overrides TOML (default: ``streams/prices.toml`` when present).
    allowed_lateness_s : float
        Events up to this much older than the newest still count (the
        engine's :class:`~spendsentry.engine.EngineConfig`; the worker reads
        it back from ``engine.config``).

    Raises
    ------
    spendsentry.errors.ConfigError
        Invalid policies (:class:`~spendsentry.policy.PolicyError`) or prices.
    """
    from spendsentry.engine import Engine, EngineConfig

    return Engine(
        load_policies(policies),
        config=EngineConfig(allowed_lateness_s=allowed_lateness_s),
        prices=load_prices(prices),
    )
