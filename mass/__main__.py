"""`python -m mass ...` is the same as the `mass` command."""

from mass.cli import main

raise SystemExit(main())
