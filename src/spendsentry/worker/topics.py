"""The worker's topics: names, partition counts and configs.

They come from ``streams/topics.toml`` when it exists (``[topics.<logical>]``
tables with ``name``, ``partitions`` and ``config``), with the defaults below for
every logical topic the file leaves out (default names:
:data:`spendsentry.messages.topics.DEFAULT_TOPICS`). All of them are created explicitly
before any client touches them: Tansu would otherwise auto-create a topic with
4 partitions the first time a client asks for its metadata.

>>> t = TopicsConfig.defaults()
>>> t.usage.name, t.throttle.config["cleanup.policy"]
('ai.usage', 'compact')
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from spendsentry.errors import ConfigError
from spendsentry.kafka.admin import TopicSpec
from spendsentry.messages.topics import DEFAULT_TOPICS

#: Where the topic layout lives in a checkout.
DEFAULT_TOPICS_FILE = Path("streams/topics.toml")

_DEFAULTS: dict[str, TopicSpec] = {
    # usage and outcomes are keyed by use case with the same partition count, so
    # partition p of both holds the same use cases (co-partitioned for scale-out).
    "usage": TopicSpec(DEFAULT_TOPICS["usage"], 6),
    "outcomes": TopicSpec(DEFAULT_TOPICS["outcomes"], 6),
    "alerts": TopicSpec(DEFAULT_TOPICS["alerts"], 3),
    # Latest command per scope is all a gateway needs: compaction keeps exactly that.
    "throttle": TopicSpec(DEFAULT_TOPICS["throttle"], 3, {"cleanup.policy": "compact"}),
    "deadletter": TopicSpec(DEFAULT_TOPICS["deadletter"], 3),
    "control": TopicSpec(DEFAULT_TOPICS["control"], 1),
    # Per-partition engine snapshots (docs/worker.md, State): compacted, so the
    # latest snapshot of every partition is kept; as many partitions as the inputs.
    "state": TopicSpec(DEFAULT_TOPICS["state"], 6, {"cleanup.policy": "compact"}),
}


@dataclass(frozen=True, slots=True)
class TopicsConfig:
    """Every topic the worker reads or writes, by logical name."""

    usage: TopicSpec
    outcomes: TopicSpec
    alerts: TopicSpec
    throttle: TopicSpec
    deadletter: TopicSpec
    control: TopicSpec
    state: TopicSpec

    @classmethod
    def defaults(cls) -> TopicsConfig:
        """The built-in layout (``ai.usage``, ``ai.outcomes``, ...)."""
        return cls(**_DEFAULTS)

    @classmethod
    def load(cls, path: str | Path | None = None) -> TopicsConfig:
        """Read ``path`` (default ``streams/topics.toml`` if present) over the defaults.

        Parameters
        ----------
        path : str or Path, optional
            A TOML file with ``[topics.<logical>]`` tables. Without it, and with no
            ``streams/topics.toml`` in the working directory, the defaults apply.

        Raises
        ------
        ConfigError
            If the file cannot be read or a table is malformed.
        """
        if path is None:
            if not DEFAULT_TOPICS_FILE.is_file():
                return cls.defaults()
            path = DEFAULT_TOPICS_FILE
        try:
            doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read topics file {path}: {exc}") from None
        return cls.from_dict(doc.get("topics", {}), source=str(path))

    @classmethod
    def from_dict(cls, tables: dict[str, Any], *, source: str = "<topics>") -> TopicsConfig:
        """Build from the ``topics`` table of a topics file (unknown names ignored)."""
        specs = dict(_DEFAULTS)
        for logical, table in tables.items():
            if logical not in specs:
                continue  # topics of other services (e.g. the notifier) share the file
            if not isinstance(table, dict):
                raise ConfigError(f"{source}: [topics.{logical}] must be a table")
            base = specs[logical]
            try:
                config = {str(k): str(v) for k, v in table.get("config", base.config).items()}
                specs[logical] = TopicSpec(
                    str(table.get("name", base.name)),
                    int(table.get("partitions", base.partitions)),
                    config,
                )
            except (TypeError, ValueError, AttributeError) as exc:
                raise ConfigError(f"{source}: [topics.{logical}]: {exc}") from None
        return cls(**specs)

    def specs(self) -> list[TopicSpec]:
        """All topics, for :func:`spendsentry.kafka.ensure_topics`."""
        return [getattr(self, f.name) for f in fields(self)]

    def check_co_partitioned(self) -> None:
        """Raise :class:`ConfigError` unless usage and outcomes have equal partition counts.

        One engine per partition number needs partition *p* of both topics to
        carry the same use cases.

        >>> t = TopicsConfig.from_dict({"outcomes": {"partitions": 4}})
        >>> t.check_co_partitioned()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        spendsentry.errors.ConfigError: ai.usage has 6 partitions and ai.outcomes 4: ...
        """
        check_co_partitioned(
            self.usage.name, self.usage.partitions, self.outcomes.name, self.outcomes.partitions
        )

    @property
    def inputs(self) -> tuple[str, str]:
        """The topic names the worker consumes."""
        return (self.usage.name, self.outcomes.name)


def check_co_partitioned(usage: str, n_usage: int, outcomes: str, n_outcomes: int) -> None:
    """Raise :class:`ConfigError` when two input topics' partition counts differ."""
    if n_usage != n_outcomes:
        raise ConfigError(
            f"{usage} has {n_usage} partitions and {outcomes} {n_outcomes}: they must be "
            "equal (both keyed by use case, partition p of each feeds engine p); "
            "change [topics.outcomes] partitions or recreate the topic"
        )
