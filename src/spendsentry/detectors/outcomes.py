"""A drop of the outcome rate while calls go on, judged as a Poisson count in minutes.

When an outcome flow breaks (the ticket system stops confirming, a webhook
fails, the last step of an agent errors), calls and spend go on and
outcomes stop. Cost per outcome shows it only once a window's ratio has
moved past its noise; outcomes themselves are counts, and a count that
usually brings 3 a minute and now brings 0 or 1 is unmistakable within a few
minutes. :class:`OutcomeDropDetector` runs a one-sided CUSUM of the
Poisson log-likelihood ratio "rate fell to ``drop`` of expected" against
"rate as expected" (Page's test, the fastest detector of a change for a
given false-alarm rate).

The expected count of a minute is the learned outcome rate times the share
of the usual calls this minute brings, capped at one: when calls fall (an
evening, a lull) fewer outcomes are expected, and when calls rise (a morning
ramp) the expectation does not rise ahead of outcomes that lag their calls
by minutes. Outcome streams are burstier than Poisson (batches of
confirmations), so each minute's evidence is divided by the learned
dispersion (variance over mean of the counts, at least 1).

Examples
--------
Three outcomes a minute over sixty calls, then the flow breaks:

>>> d = OutcomeDropDetector()
>>> usual = [3, 2, 4, 3, 1, 5, 3, 2, 3, 4]
>>> max(d.learn_one(usual[i % 10], 60) for i in range(600)) < 1.0
True
>>> [round(d.learn_one(o, 60), 2) for o in (0, 1, 0, 0, 1)]
[0.23, 0.31, 0.53, 0.74, 0.82]
>>> d.learn_one(0, 60) >= 1.0                # the sixth minute
True

Fewer calls, fewer outcomes expected: an evening is not a drop.

>>> d = OutcomeDropDetector()
>>> for i in range(600):
...     _ = d.learn_one(usual[i % 10], 60)
>>> max(d.learn_one(0, 6) for _ in range(30)) < 1.0
True
"""

from __future__ import annotations

import math

from river import stats


class OutcomeDropDetector:
    """One-sided Poisson CUSUM for a fall of outcomes per minute, given the calls.

    Parameters
    ----------
    drop
        The fall it is tuned to detect: the outcome rate at ``drop`` times
        the expected one (0.25: three in four outcomes missing).
    threshold
        CUSUM bar, in log-likelihood-ratio units (natural log): ``e**10``
        times likelier a drop than not. A Poisson CUSUM's run length between
        false alarms is at least about ``e**threshold`` minutes (Wald): some
        60 days at 3 outcomes a minute, measured; a 90 % drop of that rate
        takes about 6 minutes, of 10 a minute about 2.
    fading
        Fading factor of the learned rates of outcomes and calls (River's
        ``stats.EWMean``): about an hour.
    warmup
        Minutes of learning before any score.
    min_expected
        Outcomes the learned rate must bring per minute before minutes are
        judged: below it a quiet minute is no evidence.
    """

    def __init__(
        self,
        drop: float = 0.25,
        threshold: float = 10.0,
        fading: float = 0.02,
        warmup: int = 120,
        min_expected: float = 0.5,
    ) -> None:
        self.drop = drop
        self.threshold = threshold
        self.fading = fading
        self.warmup = warmup
        self.min_expected = min_expected
        self._outcomes = stats.EWMean(fading_factor=fading)
        self._calls = stats.EWMean(fading_factor=fading)
        # Squared deviation of a minute's count from its expectation: the
        # dispersion the evidence is discounted by.
        self._sq = stats.EWMean(fading_factor=fading)
        self._n = 0
        #: The CUSUM statistic (log-likelihood ratio of the drop since it began).
        self.cusum = 0.0
        #: Outcomes observed and expected since the CUSUM last stood at zero.
        self.observed = 0.0
        self.expected = 0.0
        #: Minutes since the CUSUM last stood at zero.
        self.minutes = 0

    def rebase(self) -> None:
        """Operator feedback (expected change): the drop so far is normal; the CUSUM restarts."""
        self.cusum = self.observed = self.expected = 0.0
        self.minutes = 0

    def expect(self, calls: float) -> float:
        """Outcomes expected in a minute of ``calls`` calls; pure."""
        level = self._outcomes.get()
        usual_calls = self._calls.get()
        if usual_calls <= 0:
            return 0.0
        return level * min(1.0, calls / usual_calls)

    @property
    def dispersion(self) -> float:
        """Variance over mean of a minute's outcomes (at least 1: Poisson)."""
        level = self._outcomes.get()
        return max(1.0, self._sq.get() / level) if level > 0 else 1.0

    def learn_one(self, outcomes: float, calls: float) -> float:
        """Add a minute; return the score (CUSUM over the bar: 1.0 or more is a drop)."""
        mu = self.expect(calls)
        judged = self._n >= self.warmup and self._outcomes.get() >= self.min_expected
        if judged and mu > 0:
            llr = outcomes * math.log(self.drop) + mu * (1.0 - self.drop)
            self.cusum = max(0.0, self.cusum + llr / self.dispersion)
            if self.cusum == 0.0:
                self.observed = self.expected = 0.0
                self.minutes = 0
            else:
                self.observed += outcomes
                self.expected += mu
                self.minutes += 1
        score = self.cusum / self.threshold
        self._n += 1
        self._calls.update(calls)
        if score < 0.5:
            self._outcomes.update(outcomes)
            self._sq.update((outcomes - mu) ** 2 if mu > 0 else 0.0)
        else:
            # Past half the bar the minute is evidence of a drop, not of the
            # usual rate: learning it as it is would lower the very expectation
            # the drop is measured against. The level still eases down (a
            # tenth of a step), so a lasting change is the new normal within
            # hours and the alert ends.
            level = self._outcomes.get()
            self._outcomes.update(max(outcomes, 0.9 * level))
        return score
