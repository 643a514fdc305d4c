"""`python -m tspnet <command> ...`."""

from tspnet.cli import main

raise SystemExit(main())
