"""``spendsentry demo``: the whole system on one machine, with nothing else installed.

An embedded broker, the worker (the real ``spendsentry worker`` process, serving
its status page), and the traffic simulator publishing a dozen use cases with
incidents, shown live in the terminal. :mod:`.plan` chooses the scenario,
:mod:`.feed` publishes it at the chosen speed, :mod:`.view` draws the terminal
view, :mod:`.runner` starts and stops everything.
"""

from spendsentry.demo.plan import DemoPlan
from spendsentry.demo.runner import DemoError, DemoOptions, run_demo

__all__ = ["DemoError", "DemoOptions", "DemoPlan", "run_demo"]
