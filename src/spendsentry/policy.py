"""Per-use-case policies: owners, budgets, detector tuning and the action ladder.

Policies are TOML files (``streams/policies/*.toml``) checked against
``schemas/policy.json``; the schema's descriptions document every key. A use
case may be defined in one file only. ``[defaults]`` applies to use cases
without a policy of their own; the policy of a use case that has one is
complete by itself (keys it leaves out take the built-in defaults below, not
those of ``[defaults]``), so reading one table tells what applies.

>>> policies = PolicySet.from_toml_text('''
... [use_cases.support_chat]
... owner = "#support-ai-oncall"
... auto_throttle = "on"
... [use_cases.support_chat.budgets]
... cost_per_hour_usd = 40.0
... [[use_cases.support_chat.ladder]]
... at = "warning"
... action = "limit_rate"
... requests_per_minute = 600
... ''', auto_throttle="dry_run")
>>> p = policies.for_use_case("support_chat")
>>> p.budgets.cost_per_hour_usd, p.step_for("critical").action, p.step_for("info")
(40.0, 'limit_rate', None)
>>> policies.for_use_case("something_new").auto_throttle
'dry_run'

Everything here is immutable and picklable. Snapshots never hold policies: a
restored engine gets the restoring process's (:mod:`spendsentry.snapshot`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from spendsentry.concurrency import ConcurrencyLimit
from spendsentry.contracts import ALERT_KINDS, LADDER_ACTIONS, format_errors, key_path, validator
from spendsentry.errors import ConfigError
from spendsentry.messages.severity import SEVERITIES, SEVERITY_RANK

__all__ = [
    "AUTO_THROTTLE_ENV",
    "AUTO_THROTTLE_MODES",
    "DEFAULT_LADDER",
    "DEFAULT_THRESHOLDS",
    "TIERS",
    "Budgets",
    "DetectorSetting",
    "FleetPrior",
    "LadderStep",
    "Policy",
    "PolicyError",
    "PolicySet",
    "UnownedFloors",
]

#: Environment variable with the auto_throttle mode of use cases without a policy.
AUTO_THROTTLE_ENV = "SPENDSENTRY_AUTO_THROTTLE"
#: off: alert only; dry_run: publish throttle commands marked dry_run; on: enforce.
AUTO_THROTTLE_MODES: tuple[str, ...] = ("off", "dry_run", "on")
#: production, or experiment (info alerts only, never throttled).
TIERS: tuple[str, ...] = ("production", "experiment")

# Unknown use cases each get a derived policy; events name use cases, so a
# flood of junk names must not grow the cache without bound.
_MAX_DERIVED = 10_000


class PolicyError(ConfigError, ValueError):
    """Policy files, or a policy, are invalid.

    ``str(error)`` is one line per problem, each naming the file and the key
    path, e.g. ``streams/policies/x.toml: use_cases.support_chat.budgets.
    cost_per_hour_usd: -3 is less than the minimum of 0``; ``errors`` holds
    the lines.
    """

    def __init__(self, errors: str | Sequence[str]) -> None:
        self.errors: tuple[str, ...] = (errors,) if isinstance(errors, str) else tuple(errors)
        super().__init__("\n".join(self.errors))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.errors,))


#: The shares of a budget whose crossing warns (``budget_threshold``): half,
#: four fifths, all of it.
DEFAULT_THRESHOLDS: tuple[float, ...] = (0.5, 0.8, 1.0)


@dataclass(frozen=True, slots=True)
class Budgets:
    """Spend limits of a use case; ``None`` means no limit of that kind.

    ``thresholds`` are the shares of each cost budget (hour, day, month) whose
    crossing gives one ``budget_threshold`` alert per period (rising, each in
    (0, 1.5]).
    """

    cost_per_hour_usd: float | None = None
    cost_per_day_usd: float | None = None
    cost_per_month_usd: float | None = None
    tokens_per_minute: int | None = None
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS


@dataclass(frozen=True, slots=True)
class DetectorSetting:
    """Tuning of one detector for one use case.

    ``sensitivity`` above 1 makes the detector fire more readily, below 1 less.
    ``min_sensitivity`` is the floor operator feedback may lower it to (each
    ``false_alarm`` on ``ai.control`` takes it one step down, see
    :mod:`spendsentry.feedback`); a sensitivity already below it is its own floor.

    >>> DetectorSetting(sensitivity=0.4).floor
    0.4
    >>> DetectorSetting().floor
    0.5
    """

    enabled: bool = True
    sensitivity: float = 1.0
    min_sensitivity: float = 0.5

    @property
    def floor(self) -> float:
        """The lowest sensitivity feedback may set."""
        return min(self.sensitivity, self.min_sensitivity)


_DEFAULT_DETECTOR = DetectorSetting()


@dataclass(frozen=True, slots=True)
class UnownedFloors:
    """When spend that no policy names is worth a person's attention (``unowned_spend``).

    Both floors must be reached by the use case's spend over the last hour:
    dollars, so a new feature spending cents is left alone, and a share of
    what every use case spent, so a large fleet is not told about small
    change. $5 an hour is about $3,600 a month: a budget line somebody should
    own. Read from ``[defaults.unowned_spend]``; only the defaults' floors
    count (a use case with a policy of its own is owned).
    """

    min_cost_per_hour_usd: float = 5.0
    #: Off by default: a worker judges the fleet of its own input partitions, so a
    #: share makes the alert depend on how use cases fall on partitions (replay, one
    #: engine, and a worker of N partitions would differ: docs/ownership.md).
    min_fleet_share: float = 0.0


@dataclass(frozen=True, slots=True)
class FleetPrior:
    """What a use case is judged against before its own baseline has warmed up.

    Every kind learns a use case's first 60 to 120 minutes as its normal, so a
    new use case that starts out expensive would be its own baseline. Until
    then ``prompt_inflation`` and ``cost_spike`` compare it with the fleet:
    these reference numbers. They are configuration, not statistics the engine
    gathers, because a worker's engine sees only the use cases of its own input
    partitions and replay sees them all: numbers learned live would make the
    alerts depend on how use cases fall on partitions (docs/ownership.md).
    Read from ``[defaults.fleet_prior]``, for every use case (a policy of its
    own included): the fleet is the same whoever looks at it.
    """

    #: Input tokens per LLM call that 95% of the fleet's use cases stay under.
    prompt_tokens_p95: float = 4000.0
    #: A typical call of the fleet (input and output tokens): with a model's
    #: price it gives that model's typical cost per call.
    typical_prompt_tokens: float = 1500.0
    typical_output_tokens: float = 400.0
    #: US dollars an hour that the fleet's largest use cases spend.
    largest_use_case_per_hour_usd: float = 25.0
    #: Minutes (from a use case's first event) it is judged against the fleet.
    warmup_minutes: int = 120


@dataclass(frozen=True, slots=True)
class LadderStep:
    """One rung of the action ladder: from severity ``at`` on, do ``action``.

    ``action`` is one of :data:`spendsentry.contracts.LADDER_ACTIONS`; "none"
    means alert only. A ``limit_rate`` step with neither ``requests_per_minute``
    nor ``tokens_per_minute`` (only the built-in :data:`DEFAULT_LADDER` has
    one; policy files must give a number) means "limit to the scope's baseline
    rate": the throttle planner picks the number from what it has learned.
    """

    at: str
    action: str
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    target_model: str | None = None
    max_input_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.at not in SEVERITY_RANK:
            raise PolicyError(f"ladder step at={self.at!r}: not one of {', '.join(SEVERITIES)}")
        if self.action not in LADDER_ACTIONS:
            raise PolicyError(
                f"ladder step action={self.action!r}: not one of {', '.join(LADDER_ACTIONS)}"
            )
        if self.action == "route_model" and not self.target_model:
            raise PolicyError("ladder step route_model needs target_model")
        if self.action == "cap_input_tokens" and not self.max_input_tokens:
            raise PolicyError("ladder step cap_input_tokens needs max_input_tokens")

    @property
    def throttles(self) -> bool:
        """The step asks for a throttle command (its action is not "none")."""
        return self.action != "none"

    def params(self) -> dict[str, Any]:
        """The ``params`` object of the throttle command this step asks for.

        >>> LadderStep("critical", "route_model", target_model="gpt-4o-mini").params()
        {'target_model': 'gpt-4o-mini'}
        """
        out: dict[str, Any] = {}
        for name in (
            "requests_per_minute",
            "tokens_per_minute",
            "target_model",
            "max_input_tokens",
        ):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


#: The ladder of a policy that sets none: a warning only alerts; a critical
#: alert limits the scope to its baseline rate (see :class:`LadderStep`), as a
#: dry run unless auto_throttle is "on". Without a number of the owner's
#: choosing, going back to normal is the one limit that is always defensible.
DEFAULT_LADDER: tuple[LadderStep, ...] = (
    LadderStep("warning", "none"),
    LadderStep("critical", "limit_rate"),
)


class _DetectorMap(Mapping[str, DetectorSetting]):
    """An immutable, hashable, picklable mapping of alert kind to setting."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, DetectorSetting] | None = None) -> None:
        self._data: dict[str, DetectorSetting] = dict(data or {})

    def __getitem__(self, key: str) -> DetectorSetting:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self.items()) == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        return repr(self._data)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._data,))


@dataclass(frozen=True, slots=True)
class Policy:
    """What applies to one use case.

    ``explicit`` is True when the use case has a policy of its own, False when
    it got the defaults. Construction checks the values (``PolicyError``),
    sorts the ladder by severity and freezes ``detectors``.
    """

    use_case: str
    owner: str | None = None
    team: str | None = None
    tier: str = "production"
    auto_throttle: str = "dry_run"
    budgets: Budgets = Budgets()
    outcome: str | None = None
    cost_per_outcome_target_usd: float | None = None
    detectors: Mapping[str, DetectorSetting] = field(default_factory=_DetectorMap)
    ladder: tuple[LadderStep, ...] = DEFAULT_LADDER
    cooldown_s: float = 600.0
    max_duration_s: float = 3600.0
    explicit: bool = False
    #: The floors of ``unowned_spend`` (set in ``[defaults]``; see :class:`UnownedFloors`).
    unowned: UnownedFloors = UnownedFloors()
    #: What a new use case is compared with (see :class:`FleetPrior`).
    fleet_prior: FleetPrior = FleetPrior()
    #: Calls in flight at once (``[use_cases.NAME.concurrency]``), enforced by
    #: the gateways' guards, not the engine (see :meth:`PolicySet.concurrency_limits`).
    concurrency: ConcurrencyLimit = field(default_factory=ConcurrencyLimit)

    def __post_init__(self) -> None:
        where = f"use case {self.use_case!r}"
        not_finite = [f"{where}: {line}" for line, _ in _non_finite_numbers(self)]
        if not_finite:
            raise PolicyError(not_finite)
        if self.tier not in TIERS:
            raise PolicyError(f"{where}: tier {self.tier!r} is not one of {', '.join(TIERS)}")
        if self.auto_throttle not in AUTO_THROTTLE_MODES:
            raise PolicyError(
                f"{where}: auto_throttle {self.auto_throttle!r} is not one of "
                f"{', '.join(AUTO_THROTTLE_MODES)}"
            )
        unknown = sorted(set(self.detectors) - set(ALERT_KINDS))
        if unknown:
            raise PolicyError(f"{where}: unknown detectors {', '.join(unknown)}")
        seen: set[str] = set()
        for step in self.ladder:
            if step.at in seen:
                raise PolicyError(f"{where}: two ladder steps at {step.at!r}")
            seen.add(step.at)
        # Under a second, expires_at can equal issued_at in float arithmetic
        # and the planner could not build the command.
        if self.max_duration_s < 1 or self.cooldown_s < 0:
            raise PolicyError(f"{where}: max_duration_s must be >= 1 and cooldown_s >= 0")
        # Frozen: the normalized values go in through object.__setattr__.
        if not isinstance(self.detectors, _DetectorMap):
            object.__setattr__(self, "detectors", _DetectorMap(self.detectors))
        ladder = tuple(sorted(self.ladder, key=lambda s: SEVERITY_RANK[s.at]))
        if ladder != self.ladder:
            object.__setattr__(self, "ladder", ladder)

    @property
    def max_severity(self) -> str:
        """The highest severity this use case may alert at ("info" for experiments)."""
        return "info" if self.tier == "experiment" else SEVERITIES[-1]

    def detector(self, kind: str) -> DetectorSetting:
        """The setting of detector ``kind`` (enabled, sensitivity 1.0 when not configured).

        Raises ``ValueError`` for a kind that is not an alert kind, so a typo
        in a detector's name cannot silently read the defaults.
        """
        setting = self.detectors.get(kind)
        if setting is not None:
            return setting
        if kind not in ALERT_KINDS:
            raise ValueError(f"unknown detector kind {kind!r}")
        return _DEFAULT_DETECTOR

    def step_for(self, severity: str) -> LadderStep | None:
        """The ladder step for an alert of ``severity``: the highest step at or below it.

        Returns ``None`` when no step is that low, and always for experiment-tier
        use cases, which are never throttled. A step whose action is "none"
        is returned as such (the owner chose to only alert). Whether the step
        is enforced, run dry or skipped is ``auto_throttle``'s business.

        Raises ``ValueError`` for an unknown severity.
        """
        rank = SEVERITY_RANK.get(severity)
        if rank is None:
            raise ValueError(f"unknown severity {severity!r}; expected one of {SEVERITIES}")
        if self.tier == "experiment":
            return None
        chosen = None
        for step in self.ladder:  # sorted by severity in __post_init__
            if SEVERITY_RANK[step.at] <= rank:
                chosen = step
        return chosen


class PolicySet:
    """All policies in force, and the defaults for use cases without one.

    Parameters
    ----------
    policies
        The explicit policies (marked ``explicit=True`` here if they are not).
    defaults
        The template for use cases without a policy (its ``use_case`` is
        ignored). When ``None``: the built-in defaults, with ``auto_throttle``
        read from ``SPENDSENTRY_AUTO_THROTTLE`` (off, dry_run or on; default
        dry_run) now, once.
    files
        The files the policies came from, for messages.

    Raises
    ------
    PolicyError
        A use case given twice, or an invalid ``SPENDSENTRY_AUTO_THROTTLE``.
    """

    def __init__(
        self,
        policies: Iterable[Policy] = (),
        *,
        defaults: Policy | None = None,
        files: Sequence[str | os.PathLike[str]] = (),
    ) -> None:
        self._policies: dict[str, Policy] = {}
        for policy in policies:
            if policy.use_case in self._policies:
                raise PolicyError(f"use case {policy.use_case!r} is defined twice")
            if not policy.explicit:
                policy = replace(policy, explicit=True)
            self._policies[policy.use_case] = policy
        if defaults is None:
            defaults = Policy(use_case="", auto_throttle=_auto_throttle_from_env())
        self._defaults = replace(defaults, use_case="", explicit=False)
        self._files: tuple[str, ...] = tuple(str(f) for f in files)
        self._derived: dict[str, Policy] = {}

    # -- construction ----------------------------------------------------

    @classmethod
    def empty(cls) -> PolicySet:
        """No explicit policies: every use case gets the built-in defaults."""
        return cls()

    @classmethod
    def load(cls, paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> PolicySet:
        """Load policy files.

        Parameters
        ----------
        paths
            A directory (all its ``*.toml`` files, in name order, not
            recursing), a file, or a sequence of them.

        Returns
        -------
        PolicySet

        Raises
        ------
        PolicyError
            With every problem found in every file (each line names the file
            and the key): a missing path, invalid TOML, a number that is NaN
            or infinite, a schema violation (out-of-range numbers included), a
            use case or ``[defaults]`` defined in two files (both named), or
            an invalid ``SPENDSENTRY_AUTO_THROTTLE`` when ``[defaults]`` does
            not set auto_throttle.
        """
        if isinstance(paths, str | os.PathLike):
            paths = [paths]
        errors: list[str] = []
        files: list[Path] = []
        seen: set[Path] = set()
        for raw in paths:
            path = Path(raw)
            if path.is_dir():
                candidates = sorted(p for p in path.glob("*.toml") if p.is_file())
            elif path.is_file():
                candidates = [path]
            else:
                errors.append(f"{path}: no such file or directory")
                continue
            for candidate in candidates:
                # The same file named twice (a directory and a file in it) is
                # one file, not a use case defined twice.
                resolved = candidate.resolve()
                if resolved not in seen:
                    seen.add(resolved)
                    files.append(candidate)
        docs: list[tuple[str, dict[str, Any]]] = []
        for path in files:
            try:
                with path.open("rb") as fh:
                    doc = tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                errors.append(f"{path}: invalid TOML: {exc}")
                continue
            except OSError as exc:
                errors.append(f"{path}: cannot read: {exc.strerror or exc}")
                continue
            docs.append((str(path), doc))
        return cls._from_docs(docs, errors, files=[str(p) for p in files])

    @classmethod
    def from_toml_text(
        cls, text: str, name: str = "<string>", *, auto_throttle: str | None = None
    ) -> PolicySet:
        """Build a policy set from the text of one policy file (tests, examples).

        ``auto_throttle``, when given, replaces the environment variable as the
        source of the defaults' auto_throttle (``[defaults]`` still wins).
        """
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"{name}: invalid TOML: {exc}") from None
        return cls._from_docs([(name, doc)], [], files=[name], auto_throttle=auto_throttle)

    @classmethod
    def _from_docs(
        cls,
        docs: Sequence[tuple[str, dict[str, Any]]],
        errors: list[str],
        *,
        files: Sequence[str],
        auto_throttle: str | None = None,
    ) -> PolicySet:
        schema = validator("policy")
        policies: dict[str, Policy] = {}
        origin: dict[str, str] = {}
        defaults: tuple[str, dict[str, Any]] | None = None
        for name, doc in docs:
            problems = _doc_problems(schema, doc)
            if problems:
                errors.extend(f"{name}: {line}" for line in problems)
                continue
            if "defaults" in doc:
                if defaults is not None:
                    errors.append(f"{name}: defaults: already defined in {defaults[0]}")
                else:
                    defaults = (name, doc["defaults"])
            for use_case, table in doc.get("use_cases", {}).items():
                if use_case in origin:
                    errors.append(
                        f"{name}: use_cases.{_key(use_case)}: already defined in {origin[use_case]}"
                    )
                    continue
                origin[use_case] = name
                policies[use_case] = _policy(use_case, table, explicit=True)
        template = _defaults_policy(
            None if defaults is None else defaults[1], auto_throttle, errors
        )
        if errors:
            raise PolicyError(errors)
        if template is not None and template.fleet_prior != FleetPrior():
            # The fleet is one for every use case: [defaults] says what it is.
            prior = template.fleet_prior
            policies = {k: replace(p, fleet_prior=prior) for k, p in policies.items()}
        return cls(policies.values(), defaults=template, files=files)

    # -- queries -----------------------------------------------------------

    def for_use_case(self, use_case: str) -> Policy:
        """The policy of ``use_case``: its own, or the defaults (``explicit=False``)."""
        policy = self._policies.get(use_case)
        if policy is not None:
            return policy
        policy = self._derived.get(use_case)
        if policy is None:
            if len(self._derived) >= _MAX_DERIVED:
                self._derived.clear()
            policy = replace(self._defaults, use_case=use_case)
            self._derived[use_case] = policy
        return policy

    @property
    def defaults(self) -> Policy:
        """The template for use cases without a policy (``use_case`` is "")."""
        return self._defaults

    def concurrency_limits(self) -> dict[str, ConcurrencyLimit]:
        """The use cases with a concurrency limit and their limits, for the
        gateways' ``ThrottleGuard(concurrency=...)`` (docs/throttling.md).

        >>> PolicySet.from_toml_text('''
        ... [use_cases.support_chat.concurrency]
        ... max_in_flight = 20
        ... max_in_flight_per_session = 2
        ... [use_cases.search]
        ... owner = "#search"
        ... ''').concurrency_limits()
        {'support_chat': ConcurrencyLimit(max_in_flight=20, max_in_flight_per_session=2)}
        """
        return {
            p.use_case: p.concurrency
            for p in self._policies.values()
            if p.concurrency != ConcurrencyLimit()
        }

    @property
    def use_cases(self) -> tuple[str, ...]:
        """The use cases with a policy of their own, sorted."""
        return tuple(sorted(self._policies))

    @property
    def files(self) -> tuple[str, ...]:
        """The files the policies were loaded from, in load order."""
        return self._files

    def __iter__(self) -> Iterator[Policy]:
        """The explicit policies, sorted by use case."""
        return iter([self._policies[name] for name in sorted(self._policies)])

    def __len__(self) -> int:
        return len(self._policies)

    def __contains__(self, use_case: object) -> bool:
        return use_case in self._policies

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PolicySet):
            return NotImplemented
        return self._policies == other._policies and self._defaults == other._defaults

    __hash__ = None  # type: ignore[assignment]  # mutable cache inside; equality by value

    def __repr__(self) -> str:
        return f"PolicySet({len(self._policies)} policies from {len(self._files)} files)"

    def __getstate__(self) -> dict[str, Any]:
        # The derived-policy cache is rebuilt on demand; keep snapshots small.
        return {"policies": self._policies, "defaults": self._defaults, "files": self._files}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._policies = dict(state["policies"])
        self._defaults = state["defaults"]
        self._files = tuple(state["files"])
        self._derived = {}


def _auto_throttle_from_env() -> str:
    raw = os.environ.get(AUTO_THROTTLE_ENV, "").strip().lower()
    if not raw:
        return "dry_run"
    if raw not in AUTO_THROTTLE_MODES:
        raise PolicyError(
            f"{AUTO_THROTTLE_ENV}: {raw!r} is not one of {', '.join(AUTO_THROTTLE_MODES)}"
        )
    return raw


def _non_finite_numbers(
    value: object, path: tuple[str | int, ...] = ()
) -> list[tuple[str, tuple[str | int, ...]]]:
    """Every NaN or infinite number in ``value``: ``(message, key path)``, in order.

    The one check of every number a policy holds, wherever it is (budgets,
    targets, sensitivities, durations, ladder steps, and keys added later),
    for both a parsed policy file and a :class:`Policy` built in code. TOML
    has ``nan`` and ``inf``, and JSON Schema's minimum and maximum are false
    for NaN, so without this ``max_duration_s = nan`` passed the schema and
    the first throttle command could not be written.
    """
    if isinstance(value, float):
        if math.isfinite(value):
            return []
        return [(f"{key_path('', path)}: {value!r} is not a finite number", path)]
    if isinstance(value, Mapping):
        items: Iterable[tuple[str | int, object]] = ((str(k), v) for k, v in value.items())
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
    else:
        return []
    found = []
    for key, item in items:
        found += _non_finite_numbers(item, (*path, key))
    return found


def _defaults_policy(
    table: dict[str, Any] | None, auto_throttle: str | None, errors: list[str]
) -> Policy | None:
    """The ``[defaults]`` policy (None: built-in), with the throttle mode from the
    argument or the environment when the table does not set it."""
    template = None if table is None else _policy("", table, explicit=False)
    if table is None or "auto_throttle" not in table:
        try:
            mode = auto_throttle if auto_throttle is not None else _auto_throttle_from_env()
        except PolicyError as exc:
            errors.extend(exc.errors)
        else:
            template = replace(template or Policy(use_case=""), auto_throttle=mode)
    return template


def _doc_problems(schema: Any, doc: dict[str, Any]) -> list[str]:
    """What is wrong with one policy file's document, one line each."""
    # NaN and infinities first: the schema's bounds cannot see NaN (every
    # comparison with it is false), and for infinities its message would only
    # repeat the point at the same key.
    not_finite = _non_finite_numbers(doc)
    at = {path for _, path in not_finite}
    problems = [line for line, _ in not_finite]
    problems += format_errors(
        (e for e in schema.iter_errors(doc) if tuple(e.absolute_path) not in at), root=""
    )
    return problems + _ladder_problems(doc) + _threshold_problems(doc)


def _policy_tables(doc: dict[str, Any]) -> list[tuple[str, Any]]:
    """``[defaults]`` and each ``[use_cases.X]`` table of a document, with its path."""
    tables: list[tuple[str, Any]] = [("defaults", doc.get("defaults"))]
    use_cases = doc.get("use_cases")
    if isinstance(use_cases, dict):
        tables += [(f"use_cases.{_key(k)}", v) for k, v in use_cases.items()]
    return tables


def _threshold_problems(doc: dict[str, Any]) -> list[str]:
    """Checks JSON Schema cannot express: budget thresholds in rising order.

    >>> _threshold_problems({"use_cases": {"a": {"budgets": {"thresholds": [0.8, 0.5]}}}})
    ['use_cases.a.budgets.thresholds: thresholds must be in rising order, got [0.8, 0.5]']
    """
    problems = []
    for where, table in _policy_tables(doc):
        budgets = table.get("budgets") if isinstance(table, dict) else None
        values = budgets.get("thresholds") if isinstance(budgets, dict) else None
        if not isinstance(values, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in values
        ):
            continue  # the schema says what is wrong with it
        if any(a >= b for a, b in itertools.pairwise(values)):
            problems.append(
                f"{where}.budgets.thresholds: thresholds must be in rising order, got {values}"
            )
    return problems


def _ladder_problems(doc: dict[str, Any]) -> list[str]:
    """Checks JSON Schema cannot express: one ladder step per severity."""
    problems = []
    for where, table in _policy_tables(doc):
        ladder = table.get("ladder") if isinstance(table, dict) else None
        if not isinstance(ladder, list):
            continue
        first: dict[str, int] = {}
        for i, step in enumerate(ladder):
            at = step.get("at") if isinstance(step, dict) else None
            if not isinstance(at, str):
                continue
            if at in first:
                problems.append(
                    f"{where}.ladder[{i}].at: {at!r} is already used by ladder[{first[at]}]"
                )
            else:
                first[at] = i
    return problems


def _policy(use_case: str, table: Mapping[str, Any], *, explicit: bool) -> Policy:
    """Build a Policy from a schema-valid table (TOML numbers are coerced)."""
    budgets = table.get("budgets", {})
    tpm = budgets.get("tokens_per_minute")
    outcome = table.get("cost_per_outcome", {})
    target = outcome.get("target_usd")
    unowned = table.get("unowned_spend", {})
    prior = table.get("fleet_prior", {})
    slots = table.get("concurrency", {})
    detectors = {
        kind: DetectorSetting(
            enabled=bool(setting.get("enabled", True)),
            sensitivity=float(setting.get("sensitivity", 1.0)),
            min_sensitivity=float(setting.get("min_sensitivity", 0.5)),
        )
        for kind, setting in table.get("detectors", {}).items()
    }
    ladder = DEFAULT_LADDER
    if "ladder" in table:
        ladder = tuple(_ladder_step(step) for step in table["ladder"])
    return Policy(
        use_case=use_case,
        owner=table.get("owner"),
        team=table.get("team"),
        tier=table.get("tier", "production"),
        auto_throttle=table.get("auto_throttle", "dry_run"),
        budgets=Budgets(
            cost_per_hour_usd=_opt_float(budgets.get("cost_per_hour_usd")),
            cost_per_day_usd=_opt_float(budgets.get("cost_per_day_usd")),
            cost_per_month_usd=_opt_float(budgets.get("cost_per_month_usd")),
            tokens_per_minute=None if tpm is None else int(tpm),
            thresholds=tuple(float(t) for t in budgets.get("thresholds", DEFAULT_THRESHOLDS)),
        ),
        outcome=outcome.get("outcome"),
        cost_per_outcome_target_usd=None if target is None else float(target),
        detectors=detectors,
        ladder=ladder,
        cooldown_s=float(table.get("cooldown_s", 600.0)),
        max_duration_s=float(table.get("max_duration_s", 3600.0)),
        explicit=explicit,
        unowned=UnownedFloors(
            min_cost_per_hour_usd=float(unowned.get("min_cost_per_hour_usd", 5.0)),
            min_fleet_share=float(unowned.get("min_fleet_share", 0.0)),
        ),
        fleet_prior=_fleet_prior(prior),
        concurrency=ConcurrencyLimit(
            slots.get("max_in_flight"), slots.get("max_in_flight_per_session")
        ),
    )


def _fleet_prior(table: Mapping[str, Any]) -> FleetPrior:
    """``[defaults.fleet_prior]``; keys it leaves out keep the built-in figures."""
    d = FleetPrior()

    def number(name: str, default: float) -> float:
        return float(table.get(name, default))

    return FleetPrior(
        prompt_tokens_p95=number("prompt_tokens_p95", d.prompt_tokens_p95),
        typical_prompt_tokens=number("typical_prompt_tokens", d.typical_prompt_tokens),
        typical_output_tokens=number("typical_output_tokens", d.typical_output_tokens),
        largest_use_case_per_hour_usd=number(
            "largest_use_case_per_hour_usd", d.largest_use_case_per_hour_usd
        ),
        warmup_minutes=int(table.get("warmup_minutes", d.warmup_minutes)),
    )


def _ladder_step(step: Mapping[str, Any]) -> LadderStep:
    def opt_int(name: str) -> int | None:
        value = step.get(name)
        return None if value is None else int(value)

    return LadderStep(
        at=step["at"],
        action=step["action"],
        requests_per_minute=opt_int("requests_per_minute"),
        tokens_per_minute=opt_int("tokens_per_minute"),
        target_model=step.get("target_model"),
        max_input_tokens=opt_int("max_input_tokens"),
    )


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _key(name: str) -> str:
    return key_path("", [name])
