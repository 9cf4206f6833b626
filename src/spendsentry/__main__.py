from spendsentry.cli import main

raise SystemExit(main())
