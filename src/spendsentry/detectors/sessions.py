"""How long agent sessions normally run, learned online from finished sessions."""

from __future__ import annotations

from river import stats


class SessionLengthDetector:
    """Learns the distribution of calls per finished session; scores live sessions.

    A live session is a runaway once its calls exceed
    ``max(min_calls, factor x p95)`` of finished sessions. The p95 comes from
    River's streaming ``stats.Quantile`` (P-square algorithm, constant
    memory). Runaway sessions that finish are not learned from, so a loop
    does not teach the detector that loops are normal.

    Parameters
    ----------
    quantile
        Quantile of finished session lengths taken as "a long normal session".
    factor
        How many times that quantile a live session must reach.
    min_calls
        Absolute floor: a 12-call session is never a runaway.
    warmup
        Finished sessions needed before scoring.

    Examples
    --------
    >>> d = SessionLengthDetector(warmup=50)
    >>> for i in range(200):
    ...     d.learn_one(4 + i % 8)                # sessions of 4 to 11 calls
    >>> d.threshold() >= 25
    True
    >>> d.score_one(120) > 1, d.score_one(9) < 1
    (True, True)
    """

    def __init__(
        self,
        quantile: float = 0.95,
        factor: float = 3.0,
        min_calls: float = 25.0,
        warmup: int = 30,
    ) -> None:
        self.quantile = quantile
        self.factor = factor
        self.min_calls = min_calls
        self.warmup = warmup
        self._q = stats.Quantile(quantile)
        self._mean = stats.Mean()
        self._n = 0

    def learn_one(self, calls: float) -> None:
        limit = self.threshold()
        if limit and calls >= limit:
            return
        self._q.update(calls)
        self._mean.update(calls)
        self._n += 1

    def threshold(self) -> float:
        """Calls past which a live session is a runaway (0 during warm-up)."""
        if self._n < self.warmup:
            return 0.0
        return max(self.min_calls, self.factor * (self._q.get() or 0.0))

    def typical(self) -> float:
        return self._mean.get() or 0.0

    def score_one(self, calls: float) -> float:
        limit = self.threshold()
        return calls / limit if limit else 0.0
