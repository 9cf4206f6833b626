"""spendsentry: real-time anomaly detection for AI spend.

Usage events and outcome events in; alerts and signed throttle commands out.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
