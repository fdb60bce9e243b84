"""Entry helpers for stage scripts: paths from the command line, and expected errors as one line, exit 1."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from .errors import PipelineError


def stage_paths(description: str, *names: str) -> argparse.Namespace:
    """The stage's paths from its command line, one required `--name PATH` each (dvc.yaml passes
    them; `--confusion-png` becomes the attribute `confusion_png`)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in names:
        parser.add_argument(f"--{name}", type=Path, required=True, metavar="PATH")
    return parser.parse_args()


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's `main`; a PipelineError prints `error: ...` without a traceback."""
    try:
        main()
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted: outputs already written are complete; rerun to continue", file=sys.stderr)
        sys.exit(130)
