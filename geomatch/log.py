"""Logging set up once, at the CLI group: everything human goes to stderr."""

import logging
import sys


def configure(verbosity: int) -> None:
    """-q -q: ERROR, -q: WARNING... default INFO, -v: DEBUG (and tracebacks on errors)."""
    level = max(logging.DEBUG, min(logging.CRITICAL, logging.INFO - 10 * verbosity))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if verbosity > 0 else "%(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    # Third-party chatter stays at WARNING unless asked for twice.
    for noisy in ("rasterio", "fiona", "pyogrio", "distributed", "matplotlib", "PIL", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbosity > 1 else logging.WARNING)
