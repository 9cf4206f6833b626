"""How fast a use case burns money, and whether that rate is abnormal, learned online.

A rise that is not (yet) abnormal is learned only if no burn is confirmed
within :attr:`BurnRateDetector.hold_minutes`, so a slow burn cannot teach the
baselines that it is normal on its way up.
"""

from __future__ import annotations

import math
from collections import deque

from river import stats

#: $0.50/h in $/min: rates below this are "idle" for the volatility estimate.
_RATE_FLOOR = 0.5 / 60


class BurnRateDetector:
    """The recent burn rate against the typical rate and the usual peak rate.

    The rate is the mean cost per minute of the last ``window`` minutes. It is
    abnormal above ``abnormal_ratio`` x the typical rate (River
    ``stats.EWMean``; higher for a use case whose rate swings on its own) *and*
    ``peak_ratio`` x the usual peak rate of the last ``peak_window`` minutes
    (River ``stats.RollingQuantile``), both frozen while abnormal. A flat
    projection of the 10:00 peak, or of a nightly batch job, over the whole day
    would overrun any sensible daily budget, which is noise.

    Parameters
    ----------
    window
        Minutes averaged into the current burn rate.
    abnormal_ratio
        Current rate / typical rate beyond which the rate is abnormal
        (``math.inf``: never abnormal).
    peak_ratio
        Current rate / usual peak rate beyond which the rate is abnormal.
    fading
        Fading factor of the typical rate (0.002: a half-life of about 6 hours).
    peak_window
        Minutes over which the usual peak (p99 of the rate) is taken.
    warmup
        Minutes of history before a rate can be abnormal.

    Examples
    --------
    >>> d = BurnRateDetector(warmup=60)
    >>> for i in range(2000):
    ...     d.learn_one(1.0 + 0.2 * (i % 3))      # about $1 a minute, for a day and a half
    >>> d.score_one(1.0) < 1, d.abnormal
    (True, False)
    >>> for _ in range(15):
    ...     d.learn_one(5.0)                      # five times the usual burn
    >>> d.abnormal, d.streak > 0, round(d.rate, 1)
    (True, True, 5.0)
    """

    #: A rise not yet abnormal waits this many minutes before it is learned.
    hold_minutes = 30

    def __init__(
        self,
        window: int = 15,
        abnormal_ratio: float = 1.8,
        peak_ratio: float = 1.3,
        fading: float = 0.002,
        peak_window: int = 720,
        warmup: int = 60,
    ) -> None:
        self.window = window
        self.abnormal_ratio = abnormal_ratio
        self.peak_ratio = peak_ratio
        self.warmup = warmup
        self._ring: deque[float] = deque(maxlen=window)
        self._typical = stats.EWMean(fading_factor=fading)
        self._peak = stats.RollingQuantile(q=0.99, window_size=peak_window)
        # Short-term swing of the rate around its typical level (not the daily
        # curve, which the typical level follows): high for batch jobs.
        self._log_var = stats.EWVar(fading_factor=0.01)
        #: (minute index, minute cost, rate) learned later, see learn_one().
        self._pending: deque[tuple[int, float, float]] = deque()
        self._streak = 0
        self._n = 0

    # -- River-style API ----------------------------------------------------

    @property
    def rate(self) -> float:
        """Mean cost per minute of the last ``window`` minutes learned."""
        return sum(self._ring) / len(self._ring) if self._ring else 0.0

    @property
    def typical(self) -> float:
        """The typical cost per minute (0.0 before anything is learned)."""
        return self._typical.get() or 0.0

    @property
    def streak(self) -> int:
        """Consecutive minutes, up to the last one learned, with an abnormal rate."""
        return self._streak

    @property
    def abnormal(self) -> bool:
        """Whether the rate was abnormal at the last minute learned."""
        return self._streak > 0

    def score_one(self, cost: float) -> float:
        """The rate with ``cost`` as the next minute over the bar (above 1: abnormal).

        0.0 during warm-up. Changes nothing.
        """
        if self._n < self.warmup:
            return 0.0
        ring = list(self._ring)[1:] if len(self._ring) == self.window else list(self._ring)
        ring.append(cost)
        bar = max(self._ratio() * max(self.typical, 1e-9), self.peak_ratio * self._peak_rate())
        return (sum(ring) / len(ring)) / bar if bar > 0 and math.isfinite(bar) else 0.0

    def rebase(self) -> None:
        """Operator feedback (expected change): the current rate is typical now."""
        if not self._ring:
            return
        rate = sum(self._ring) / len(self._ring)
        self._typical = stats.EWMean(fading_factor=self._typical.fading_factor)
        self._typical.update(rate)
        self._peak.update(rate)
        self._pending.clear()
        self._streak = 0

    def learn_one(self, cost: float) -> None:
        """Take one minute's cost: update the rate, the streak and (if normal) the baselines."""
        self._ring.append(cost)
        rate = sum(self._ring) / len(self._ring)
        typical = self.typical
        abnormal = (
            self._n >= self.warmup
            and rate > self._ratio() * max(typical, 1e-9)
            and rate > self.peak_ratio * self._peak_rate()
        )
        if abnormal:
            self._streak += 1
            # The rise that led here is an incident, not a usual peak.
            self._pending.clear()
        else:
            self._streak = 0
            if self._n >= self.warmup and rate > 1.4 * max(typical, 1e-9):
                self._pending.append((self._n, cost, rate))
            else:
                self._learn(cost, rate, typical)
        while self._pending and self._pending[0][0] <= self._n - self.hold_minutes:
            _, old_cost, old_rate = self._pending.popleft()
            self._learn(old_cost, old_rate, self.typical)
        self._n += 1

    # -- internals ------------------------------------------------------------

    def _peak_rate(self) -> float:
        return self._peak.get() or 0.0

    def _ratio(self) -> float:
        # A use case whose rate swings on its own (batch jobs) needs a higher
        # bar before its current rate is projected over a whole day.
        sigma = math.sqrt(max(self._log_var.get() or 0.0, 0.0))
        return max(self.abnormal_ratio, math.exp(3.0 * sigma))

    def _learn(self, cost: float, rate: float, typical: float) -> None:
        self._typical.update(cost)
        self._peak.update(rate)
        self._log_var.update(math.log((rate + _RATE_FLOOR) / (typical + _RATE_FLOOR)))
