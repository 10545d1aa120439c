"""Runs rhosearch's command line from a checkout: `python cli.py --help`.

The command line itself lives in `rhosearch/cli.py` (the `rhosearch` console script); this shim
only keeps `python cli.py ...` working without an install.
"""

from rhosearch.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
