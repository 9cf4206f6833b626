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

import logging
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from spendsentry.errors import ConfigError
from spendsentry.kafka.admin import TopicSpec, existing_partitions
from spendsentry.messages.topics import DEFAULT_TOPICS

log = logging.getLogger(__name__)

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

#: Topics whose partition count must be the usage topic's (co-partitioned inputs,
#: and one state partition per input partition).
_FOLLOW_USAGE = ("outcomes", "state")


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

    def fitted(self, existing: Mapping[str, int]) -> TopicsConfig:
        """This layout as the broker already has it, for the topics still to create.

        A topic that exists keeps its real partition count (the worker places
        snapshots and reads alerts by it). When the usage topic exists (a gateway
        published before any worker ran, and the broker auto-created it with its
        own count) and outcomes or state do not, those are created with the usage
        topic's count rather than the file's: they must match it, and only the
        missing ones can still be made to. An existing mismatch is left for
        :meth:`check_co_partitioned` to report.

        Parameters
        ----------
        existing : Mapping[str, int]
            Partition counts of the topics that exist, by real name.

        >>> t = TopicsConfig.defaults().fitted({"ai.usage": 4})
        >>> t.usage.partitions, t.outcomes.partitions, t.state.partitions, t.alerts.partitions
        (4, 4, 4, 3)
        >>> t = TopicsConfig.defaults().fitted({"ai.usage": 4, "ai.outcomes": 12})
        >>> t.outcomes.partitions, t.state.partitions
        (12, 4)
        """
        specs = {f.name: getattr(self, f.name) for f in fields(self)}
        for logical, spec in specs.items():
            if spec.name in existing:
                specs[logical] = replace(spec, partitions=existing[spec.name])
        n = existing.get(self.usage.name)
        if n is not None:
            for logical in _FOLLOW_USAGE:
                spec = specs[logical]
                if spec.name not in existing:
                    specs[logical] = replace(spec, partitions=n)
        return TopicsConfig(**specs)

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
            "if both exist on the broker, add partitions to the smaller one "
            "(kafka-topics --alter --partitions) or delete and recreate it; otherwise "
            "change [topics.outcomes] partitions in the topics file"
        )


async def fit_to_broker(
    topics: TopicsConfig, bootstrap: str, security: Mapping[str, Any] | None = None
) -> TopicsConfig:
    """``topics`` fitted (:meth:`TopicsConfig.fitted`) to what the broker already has.

    Logs a warning for every partition count that differs from the file, so an
    operator sees that a gateway started first and the broker chose the count.

    Raises
    ------
    BrokerError
        If the broker cannot be reached.
    """
    existing = await existing_partitions(
        bootstrap, [spec.name for spec in topics.specs()], security=security
    )
    fitted = topics.fitted(existing)
    for wanted, got in zip(topics.specs(), fitted.specs(), strict=True):
        if wanted.partitions != got.partitions:
            log.warning(
                "topic %s has %d partitions, not the %d of the topics file: %s",
                got.name,
                got.partitions,
                wanted.partitions,
                "it existed already (auto-created by a client that ran first?)"
                if got.name in existing
                else f"it is created to match {fitted.usage.name}",
            )
    return fitted
