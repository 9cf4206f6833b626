"""Slack for on-call: alerts as Block Kit messages, and the buttons' endpoint.

* :mod:`spendsentry.slack.blocks`: alert -> message (pure).
* :mod:`spendsentry.slack.notifier`: ``ai.alerts`` -> Slack, at-least-once,
  deduplicated across restarts (``spendsentry notify``, or inside the worker).
* :mod:`spendsentry.slack.state`: what was delivered, in the state directory.
* :mod:`spendsentry.slack.interactions`: ``POST /slack/interactions`` on the
  worker -> control actions on ``ai.control``.

See docs/slack.md for the Slack app set-up.
"""
