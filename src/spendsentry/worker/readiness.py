"""Start-up warnings about throttling that will not happen as the files say.

The worker logs each line once at start, at WARNING level:

* auto-throttle is ``on`` or ``dry_run`` for some use case (or the defaults)
  but no signing key is set, so no command will ever reach ``ai.throttle``;
* the signing key is the docker-compose default (:data:`COMPOSE_DEFAULT_KEY`),
  which anyone who read the compose file knows;
* a ladder step the throttle planner would hold back because it would loosen
  the step below (:func:`spendsentry.policy_review.ladder_warnings`).

>>> from spendsentry.actions.signing import ThrottleKeys
>>> from spendsentry.policy import PolicySet
>>> lines = throttle_warnings(PolicySet.empty(), ThrottleKeys())
>>> lines[0].startswith("THROTTLING DISABLED: auto-throttle is dry_run")
True
>>> throttle_warnings(PolicySet.empty(), ThrottleKeys.of("a-secret"))
[]
"""

from __future__ import annotations

import hmac

from spendsentry.actions.signing import KEY_ENV, ThrottleKeys
from spendsentry.policy import PolicySet
from spendsentry.policy_review import ladder_warnings

__all__ = ["COMPOSE_DEFAULT_KEY", "throttle_warnings"]

#: The key docker-compose.yml signs with when SPENDSENTRY_THROTTLE_KEY is not
#: set (so the shipped stack publishes commands out of the box).
COMPOSE_DEFAULT_KEY = "insecure-compose-default-change-me"


def throttle_warnings(policies: PolicySet, keys: ThrottleKeys) -> list[str]:
    """The warning lines for ``policies`` signed with ``keys`` (empty: all is well)."""
    out: list[str] = []
    throttling = sorted(
        {
            p.auto_throttle
            for p in [policies.defaults, *policies]
            if p.tier != "experiment" and p.auto_throttle != "off"
        }
    )
    if throttling and not keys.can_sign:
        out.append(
            f"THROTTLING DISABLED: auto-throttle is {' or '.join(throttling)} but no signing "
            f"key is set, so no throttle command reaches ai.throttle; set {KEY_ENV} (or "
            f"{KEY_ENV}_FILE) to the key the gateways verify with"
        )
    signing = keys.signing
    if signing is not None and hmac.compare_digest(signing, COMPOSE_DEFAULT_KEY.encode()):
        out.append(
            "throttle commands are signed with the docker-compose default key, which anyone "
            f"can read in docker-compose.yml: set {KEY_ENV} to a secret of your own"
        )
    out.extend(ladder_warnings(policies))
    return out
