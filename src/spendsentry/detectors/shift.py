"""River-style detectors of level shifts in ratio and rate streams.

Two small estimators cover most cost behaviours:

* :class:`RatioShiftDetector` watches a ratio of sums (input tokens per call,
  retrievals per request, fallback calls per call, cost per outcome) and
  scores how far the current ratio sits above its learned baseline, in units
  of the noise expected for the current sample size.
* :class:`RateSpikeDetector` watches a per-minute rate (cost per minute) with a
  fast adaptive level and a long rolling peak, so daily ramps, steady growth
  and the use case's own usual bursts are not anomalies.

Why not a River anomaly model as-is: the inputs are per-minute *aggregates*
of a varying number of calls, so the noise of each observation depends on its
sample size. River's ``stats.EWMean``/``EWVar`` take no sample weights, and
``anomaly.HalfSpaceTrees`` has no notion of sample size either; a night minute
with 3 calls would look as trustworthy as a peak minute with 3,000. Where an
input is unweighted (cost per minute), River's own statistics are used.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from river import stats


@dataclass(frozen=True, slots=True)
class Shift:
    """How far a window sits above its baseline."""

    observed: float
    baseline: float
    ratio: float
    z: float
    sample: float


class RatioShiftDetector:
    """Detects an upward shift of ``sum(num) / sum(den)`` over a short window.

    Parameters
    ----------
    window
        Steps (minutes) summed into the observed ratio.
    half_life
        Steps for the baseline's exponential weights to halve.
    warmup
        Units of ``den`` (calls, requests) the baseline must have learned from
        before any score is non-zero.
    min_ratio
        Observed / baseline must reach this to count as a shift.
    min_delta
        Observed - baseline must reach this (absolute floor, e.g. 0.15 of a share).
    z_threshold
        Sample-size aware z-score the shift must reach.
    min_den
        A window with fewer units than this is not judged (sparse traffic).
    anomalous_weight
        Weight of a clearly anomalous window in the baseline update: small, so
        an incident does not become the new normal within minutes, but
        non-zero, so a permanent change is absorbed after hours.
    long_window, long_z_threshold
        A second, longer window (0: none) judged with its own, higher z bar.
        A sparse use case (a few calls a minute) cannot show a moderate shift
        in ``window`` minutes against its noise, but the same shift held for
        half an hour is unmistakable. Same ``min_ratio`` and ``min_delta``.
        The bar is higher because the per-unit variance is learned from
        ``window``-long windows: slow drifts make a long window noisier than
        its sample size alone says.
    hold_z_fraction
        A window that clears ``min_ratio`` and ``min_delta`` and this fraction
        of ``z_threshold`` (0: off) is learned as anomalous, with
        ``anomalous_weight``. For shifts that ramp in: learning the ramp would
        raise the noise estimate as fast as the shift grows. Off by default:
        on a noisy ratio (cost per outcome) it trims the noise estimate and
        costs false alarms.
    baseline_uncertainty
        Count the baseline's own uncertainty (from the units it learned, by
        recency) in the z-score: for ratios whose units are sparse at times
        (outcomes at a weekend), where a baseline can rest on a few dozen.

    Examples
    --------
    >>> d = RatioShiftDetector(window=5, warmup=200)
    >>> for _ in range(120):
    ...     d.learn_one(1000.0 * 20, 20)          # 20 calls a minute, 1,000 tokens each
    >>> round(d.baseline)
    1000
    >>> d.score_one(1000.0 * 20, 20) < 1
    True
    >>> for _ in range(5):
    ...     d.learn_one(2500.0 * 20, 20)          # the prompt grew 2.5x
    >>> shift = d.check(2500.0 * 20, 20)
    >>> shift.z > 5, round(shift.ratio, 1)
    (True, 2.5)
    """

    def __init__(
        self,
        window: int = 5,
        half_life: float = 240.0,
        warmup: float = 100.0,
        min_ratio: float = 1.5,
        min_delta: float = 0.0,
        z_threshold: float = 5.0,
        min_den: float = 10.0,
        anomalous_weight: float = 0.02,
        long_window: int = 0,
        long_z_threshold: float = math.inf,
        hold_z_fraction: float = 0.0,
        baseline_uncertainty: bool = False,
    ) -> None:
        self.window = window
        self.baseline_uncertainty = baseline_uncertainty
        self.hold_z_fraction = hold_z_fraction
        self.long_window = long_window
        self.long_z_threshold = long_z_threshold
        self.half_life = half_life
        self.warmup = warmup
        self.min_ratio = min_ratio
        self.min_delta = min_delta
        self.z_threshold = z_threshold
        self.min_den = min_den
        self.anomalous_weight = anomalous_weight
        self._decay = 0.5 ** (1.0 / half_life)
        self._ring: deque[tuple[float, float]] = deque(maxlen=max(window, long_window))
        self._w = 0.0  # EW sum of den
        self._mean = 0.0  # EW mean of the per-unit value
        self._var_unit = 0.0  # EW per-unit variance estimate
        self._learned = 0.0
        self._carry = 0.0

    # -- River-style API ----------------------------------------------------

    @property
    def baseline(self) -> float:
        return self._mean

    @property
    def warmed_up(self) -> bool:
        return self._learned >= self.warmup

    def learn_one(self, num: float, den: float) -> None:
        """Add one step (e.g. one minute's token sum and call count)."""
        shift = self.check(num, den) if self.warmed_up else None
        if shift is None and self.warmed_up and self.hold_z_fraction > 0:
            # A window of the size that matters, part of the way up the z bar,
            # counts as anomalous for learning too: a ramp learned minute by
            # minute would inflate the noise estimate faster than it climbs and
            # never clear the bar (a model switch ramping in over half an hour
            # did exactly that at a few calls a minute).
            shift = self._judge(self._measure(num, den), self.z_threshold * self.hold_z_fraction)
        if shift is None and self.warmed_up and self.long_window > self.window:
            # Halfway up the long window's bar counts as anomalous for learning:
            # a sustained shift still below the bar would otherwise drag the
            # baseline and inflate the noise estimate until it never clears it.
            drift = self._measure(num, den, self.long_window)
            if drift is not None and drift.z >= self.long_z_threshold / 2:
                shift = drift
        self._ring.append((num, den))
        self._age()
        if den <= 0:
            # No unit this step: its numerator belongs to the next unit (the
            # cost of the minutes before a sparse outcome is that outcome's
            # cost). Dropped, a use case with an outcome every ten minutes
            # would learn a tenth of its cost per outcome, and any busier
            # hour (a Monday after a weekend) would read as a 5x regression.
            self._carry += num
            return
        num, self._carry = num + self._carry, 0.0
        value = num / den
        weight = den * (self.anomalous_weight if shift is not None else 1.0)
        prior = self._mean
        self._w += weight
        self._mean += (value - prior) * weight / self._w
        # Per-unit variance from the *window* mean: (x_bar_w - mu)^2 * n_w estimates
        # sigma^2 including the correlation between minutes (turns of one chat
        # session, calls of one batch), which a per-minute estimate would miss.
        recent = list(self._ring)[-self.window :]
        n_w, d_w = sum(i[0] for i in recent), sum(i[1] for i in recent)
        sq = (n_w / d_w - prior) ** 2 * d_w
        self._var_unit += (sq - self._var_unit) * weight / self._w
        self._learned += den

    def rebase(self) -> None:
        """Operator feedback (expected change): the last window's ratio is the baseline now.

        The noise estimate is kept; the window of the change now reads as normal.
        """
        recent = list(self._ring)[-self.window :]
        den = sum(i[1] for i in recent)
        if den > 0:
            self._mean = sum(i[0] for i in recent) / den
        self._carry = 0.0

    def score_one(self, num: float, den: float) -> float:
        """z-score of the window ending with this step (0 when not judgeable); pure."""
        shift = self._measure(num, den)
        return shift.z if shift is not None else 0.0

    def check(self, num: float, den: float) -> Shift | None:
        """The shift of the window ending with this step, when it is anomalous; pure.

        The short window is judged first; failing that, the long one (if any).
        """
        shift = self._judge(self._measure(num, den), self.z_threshold)
        if shift is None and self.long_window > self.window:
            shift = self._judge(self._measure(num, den, self.long_window), self.long_z_threshold)
        return shift

    def _judge(self, shift: Shift | None, z_threshold: float) -> Shift | None:
        if shift is None or shift.z < z_threshold or shift.ratio < self.min_ratio:
            return None
        if shift.observed - shift.baseline < self.min_delta:
            return None
        return shift

    # -- internals ----------------------------------------------------------

    def _age(self) -> None:
        self._w *= self._decay

    def _measure(self, num: float, den: float, steps: int = 0) -> Shift | None:
        steps = steps or self.window
        # The window as if this step were already in it.
        items = list(self._ring)[-(steps - 1) :] if steps > 1 else []
        n = sum(i[0] for i in items) + num
        d = sum(i[1] for i in items) + den
        if not self.warmed_up or d < self.min_den:
            return None
        observed = n / d
        base = self._mean
        # A variance floor of (5 % of the mean)^2 per unit: without it, a
        # perfectly regular baseline would turn any wobble into a huge z.
        var = max(self._var_unit, (0.05 * base) ** 2, 1e-12)
        # With ``baseline_uncertainty`` the baseline counts as an estimate too,
        # from ``_w`` units (weighted by recency): after a weekend of a tenth
        # of the traffic it rests on a few dozen outcomes, and a busy Monday's
        # window is no surer a shift than that baseline is sure.
        spread = var / d + (var / max(self._w, 1e-9) if self.baseline_uncertainty else 0.0)
        z = (observed - base) / math.sqrt(spread)
        ratio = observed / base if base > 0 else math.inf
        return Shift(observed, base, ratio, z, d)


def _trimmed_mean(values: deque[float] | list[float]) -> float:
    """Mean without the largest value: one minute in which a few huge calls
    landed (the Azure code trace has them hourly) must not read as a spike."""
    n = len(values)
    if n < 3:
        return sum(values) / n
    return (sum(values) - max(values)) / (n - 1)


class RateSpikeDetector:
    """Detects a sustained rate far above both the recent level and recent peaks.

    Parameters
    ----------
    window
        Minutes averaged into the observed rate (longer than a benign burst).
    level_fading
        Fading factor of River's ``stats.EWMean`` for the adaptive level: it
        follows daily ramps and growth within an hour or so.
    peak_window
        Minutes of observed rates whose ``peak_quantile`` is the "usual peak"
        (24 h: a batch job that runs every few hours stays a usual peak).
    min_ratio_level, min_ratio_peak
        The observed rate must exceed both level x ratio and peak x ratio.
    ambiguous, defer
        A window scoring between ``ambiguous`` and 1 is learned only if no
        spike is confirmed within ``defer`` minutes.
    volatility_z
        ... and the level by ``exp(volatility_z x sigma)``, sigma being the
        standard deviation of the log rate (a noisy use case needs a higher bar).
    min_excess
        ... and the level by at least this much (a 6x spike of a use case that
        spends a cent an hour is noise, not an incident).
    warmup
        Minutes before scoring.
    adopt_after
        Minutes of spike (not interrupted by a clearly normal minute) after
        which the rate is the new normal and is learned again. Without it a
        level that fell to nothing (a weekend, an idle night) would call every
        busy minute after it a spike, forever; two hours is long after any
        incident was raised, and shorter than a working day.

    Examples
    --------
    >>> d = RateSpikeDetector(warmup=60)
    >>> for i in range(180):
    ...     d.learn_one(1.0 + 0.1 * (i % 3))
    >>> d.score_one(1.1) < 1.0
    True
    >>> for _ in range(5):
    ...     d.learn_one(6.0)
    >>> d.score_one(6.0) > 1.0
    True
    """

    def __init__(
        self,
        window: int = 5,
        level_fading: float = 0.03,
        peak_window: int = 1440,
        peak_quantile: float = 0.995,
        min_ratio_level: float = 3.0,
        min_ratio_peak: float = 1.5,
        min_excess: float = 0.0,
        volatility_z: float = 3.5,
        warmup: int = 90,
        ambiguous: float = 0.5,
        defer: int = 30,
        adopt_after: int = 120,
    ) -> None:
        self.window = window
        self.adopt_after = adopt_after
        self._spiking = 0
        self.level_fading = level_fading
        self.peak_window = peak_window
        self.peak_quantile = peak_quantile
        self.min_ratio_level = min_ratio_level
        self.min_ratio_peak = min_ratio_peak
        self.min_excess = min_excess
        self.volatility_z = volatility_z
        self.warmup = warmup
        self.ambiguous = ambiguous
        self.defer = defer
        self._pending: deque[tuple[int, float]] = deque()
        self._ring: deque[float] = deque(maxlen=window)
        self._level = stats.EWMean(fading_factor=level_fading)
        self._peak = stats.RollingQuantile(q=peak_quantile, window_size=peak_window)
        # Volatility of the log rate: a use case whose minutes swing 3x on
        # their own (the Azure code trace does) needs a higher bar than one
        # whose rate is smooth.
        self._log_var = stats.EWVar(fading_factor=level_fading)
        self._n = 0

    def learn_one(self, x: float, scale: float = 1.0) -> None:
        """Add one minute's rate (``scale``: see :meth:`measure`)."""
        score = self.measure(x, scale)[0]
        self._ring.append(x)
        self._n += 1
        observed = _trimmed_mean(self._ring)
        if score >= 1.0:
            # An incident's minutes are kept out of the baselines, so a long
            # spike does not teach the detector that spikes are normal; nor
            # is the rise that led to it. Until it has lasted adopt_after.
            self._pending.clear()
            self._spiking += 1
            if self._spiking >= self.adopt_after:
                self._learn(observed)
            return
        if score < self.ambiguous:
            self._spiking = 0
        if self._n <= self.warmup or score < self.ambiguous:
            self._learn(observed)
        else:
            # Between clearly normal and a spike: decide later. If no spike is
            # confirmed within ``defer`` minutes this was a usual peak (a batch
            # job, a busy hour) and is learned as such.
            self._pending.append((self._n, observed))
        while self._pending and self._pending[0][0] <= self._n - self.defer:
            self._learn(self._pending.popleft()[1])

    def rebase(self) -> None:
        """Operator feedback (expected change): the current rate is the level now.

        The level restarts at the window's (trimmed) rate, which also counts as a
        usual peak; rises held back for later are dropped.
        """
        if not self._ring:
            return
        observed = _trimmed_mean(self._ring)
        self._level = stats.EWMean(fading_factor=self.level_fading)
        self._level.update(observed)
        self._peak.update(observed)
        self._pending.clear()
        self._spiking = 0

    def _learn(self, observed: float) -> None:
        level = self._level.get() or 0.0
        # The level learns a rise clipped: it follows growth and daily ramps,
        # not the next hour's incident. Peaks and volatility learn it as it is.
        self._level.update(min(observed, 2.0 * level) if level > 0 else observed)
        self._peak.update(observed)
        # The floor keeps idle minutes (rate 0) from reading as infinitely volatile.
        self._log_var.update(math.log(observed + max(self.min_excess, 1e-6)))

    def score_one(self, x: float) -> float:
        """Observed / threshold: 1.0 or more is a spike; pure."""
        return self.measure(x)[0]

    def measure(self, x: float, scale: float = 1.0) -> tuple[float, float, float, float]:
        """(score, observed rate, level, usual peak) of the window ending with ``x``; pure.

        ``scale``: the rates are divided by a seasonal index (see
        :class:`~spendsentry.detectors.seasonal.DailyProfile`) and ``x`` was
        divided by ``scale``; ``min_excess`` stays in undivided dollars.
        """
        if self._n < self.warmup:
            return 0.0, 0.0, 0.0, 0.0
        items = list(self._ring)
        if len(items) == self.window:
            items = items[1:]
        observed = _trimmed_mean([*items, x])
        level = self._level.get() or 0.0
        peak = self._peak.get() or 0.0
        sigma = math.sqrt(max(self._log_var.get() or 0.0, 0.0))
        ratio = max(self.min_ratio_level, math.exp(self.volatility_z * sigma))
        excess = self.min_excess / scale
        threshold = max(level * ratio, peak * self.min_ratio_peak, level + excess, 1e-9)
        return observed / threshold, observed, level, peak


class LogRateShiftDetector:
    """Detects a sustained upward shift of a heavy-tailed rate, in log space.

    :class:`RateSpikeDetector` compares arithmetic means, which is right for a
    smooth rate but blind on a use case whose minutes swing 20x on their own
    (the Azure code trace: a few huge calls, bursts of hundreds): its bar must
    sit above those swings, so a 4x step of the whole traffic can stay under
    it. Here each minute counts as ``log(rate + floor)``: the mean of logs (the
    geometric mean) is not dragged by the odd huge minute, and minutes of such
    a use case are close to independent, so a ``window``-minute mean of logs
    pins the level down well. A shift must clear both a z bar (in units of the
    learned noise of ``window``-minute means) and a size bar (``min_ratio``).

    River's ``stats.EWMean`` keeps the level and the noise; no River anomaly
    model scores a window mean against its own learned noise.

    Parameters
    ----------
    window
        Active minutes averaged (in log space) into the observed level.
    fading
        Fading factor of the level (``stats.EWMean``): it follows daily ramps
        and growth within an hour or so.
    noise_fading
        Fading factor of the noise (mean squared deviation of a window's mean
        from the level).
    z_threshold, min_ratio
        The window's geometric mean must exceed the level by this many noise
        units and by this factor.
    floor
        Added to the rate before the log, so idle minutes are finite and rates
        far below ``floor`` (a few cents an hour) cannot make a large ratio.
    warmup
        Active minutes before scoring.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(1)
    >>> d = LogRateShiftDetector(window=10, warmup=120)
    >>> for _ in range(300):
    ...     d.learn_one(rng.lognormvariate(0.0, 0.9))   # minutes swing ~10x
    >>> d.score_one(rng.lognormvariate(0.0, 0.9)) < 1.0
    True
    >>> for _ in range(9):
    ...     d.learn_one(4.0 * rng.lognormvariate(0.0, 0.9))   # the whole traffic x4
    >>> d.score_one(4.0 * rng.lognormvariate(0.0, 0.9)) > 1.0
    True
    """

    def __init__(
        self,
        window: int = 10,
        fading: float = 0.03,
        noise_fading: float = 0.01,
        z_threshold: float = 4.0,
        min_ratio: float = 2.5,
        floor: float = 1e-3,
        warmup: int = 240,
    ) -> None:
        self.window = window
        self.fading = fading
        self.noise_fading = noise_fading
        self.z_threshold = z_threshold
        self.min_ratio = min_ratio
        self.floor = floor
        self.warmup = warmup
        self._ring: deque[float] = deque(maxlen=window)
        self._level = stats.EWMean(fading_factor=fading)
        self._noise = stats.EWMean(fading_factor=noise_fading)
        self._n = 0

    def _log(self, x: float) -> float:
        return math.log(max(x, 0.0) + self.floor)

    def learn_one(self, x: float, small: bool = False) -> None:
        """Add one minute's rate (idle minutes are skipped, see ``measure``).

        ``small``: the caller knows the shift is too small in dollars to be
        an incident (a night at a weekday's scale after a weekend); it is
        learned as it is.
        """
        if x <= 0:
            return
        score = self.score_one(x)
        level = self._level.get()
        lx = self._log(x)
        self._ring.append(lx)
        self._n += 1
        if self._n > self.warmup and score >= 0.5 and not small:
            # Halfway to the bar or beyond: the level learns the minute clipped
            # to a tenth of the size bar above it, so an hour-long incident
            # does not become the new normal (a permanent change still does,
            # within hours); the noise does not learn it at all, or an incident
            # would widen the very bar it has to clear.
            self._level.update(min(lx, level + 0.1 * math.log(self.min_ratio)))
            return
        self._level.update(lx)
        if len(self._ring) == self.window:
            mean = sum(self._ring) / self.window
            self._noise.update((mean - level) ** 2)

    def rebase(self) -> None:
        """Operator feedback (expected change): the window's geometric mean is the level now."""
        if not self._ring:
            return
        self._level = stats.EWMean(fading_factor=self.fading)
        self._level.update(sum(self._ring) / len(self._ring))

    def score_one(self, x: float) -> float:
        """min(z / z_threshold, log ratio / log min_ratio): 1.0 or more is a shift; pure."""
        return self.measure(x)[0]

    def measure(self, x: float) -> tuple[float, float, float]:
        """(score, geometric ratio over the level, z) of the window ending with ``x``; pure.

        Only active minutes count (``x > 0``): the level is the typical *active*
        minute. Otherwise a use case idle most of the night (a few agent
        sessions an hour) has a level at the floor by morning, and its ordinary
        daytime minutes read as a 20x shift the clipped level takes hours to
        follow. A step of such a use case shows in more active minutes, which
        the arithmetic lens sees; this lens is for busy, lumpy use cases.
        """
        if self._n < self.warmup or x <= 0:
            return 0.0, 1.0, 0.0
        items = list(self._ring)[-(self.window - 1) :] if self.window > 1 else []
        mean = (sum(items) + self._log(x)) / (len(items) + 1)
        deviation = mean - self._level.get()
        # A noise floor of 5 % (in log units): a perfectly regular rate would
        # otherwise turn any wobble into a huge z.
        sd = math.sqrt(max(self._noise.get(), 0.05**2))
        z = deviation / sd
        score = min(z / self.z_threshold, deviation / math.log(self.min_ratio))
        return score, math.exp(deviation), z
