"""``python -m netring``: see ``netring.cli``."""

from netring.cli import main

raise SystemExit(main())
