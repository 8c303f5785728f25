"""One look for the package's command lines: `python -m dlbook.<name> --help` shows its docs."""

from __future__ import annotations

import argparse


def parser_for(module: str, doc: str | None) -> argparse.ArgumentParser:
    """An argument parser for `python -m <module>`, its help the module's docstring as written."""
    return argparse.ArgumentParser(
        prog=f"python -m {module}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
