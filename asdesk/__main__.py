"""``python -m asdesk`` and the ``asdesk`` console command."""

from __future__ import annotations

import sys


def main() -> int:
    """Run the ``asdesk`` command line (see :func:`asdesk.cli.main`) and return its exit status."""
    from asdesk.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
