"""``python -m spendsentry``: the same command line as ``spendsentry`` (:mod:`spendsentry.cli`)."""

from spendsentry.cli import main

raise SystemExit(main())
