"""Ready-made integrations with AI gateways.

* :mod:`spendsentry.integrations.litellm`: a LiteLLM ``CustomLogger`` that reports
  every call to ``ai.usage`` and obeys throttle commands before each call
  (``pip install spendsentry[litellm]``).

Modules here import their gateway lazily, so importing this package never
requires a gateway to be installed.
"""
