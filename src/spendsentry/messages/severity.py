"""Alert severities, lowest first, and the one ranking every module compares them by.

>>> SEVERITIES
('info', 'warning', 'critical')
>>> severity_rank("warning") > severity_rank("info")
True
>>> max(["warning", "critical", "info"], key=severity_rank)
'critical'
"""

from __future__ import annotations

from types import MappingProxyType

__all__ = ["SEVERITIES", "SEVERITY_RANK", "severity_rank"]

#: The severities of an alert, lowest first (the alert schema's enum).
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")
#: Severity -> rank (0 for "info"); read-only, for ``.get`` with a default.
SEVERITY_RANK = MappingProxyType({name: rank for rank, name in enumerate(SEVERITIES)})


def severity_rank(severity: str) -> int:
    """The rank of ``severity`` (``KeyError`` for a name that is not a severity)."""
    return SEVERITY_RANK[severity]
