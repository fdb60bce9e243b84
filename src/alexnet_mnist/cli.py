"""Entry wrapper for stage scripts: expected errors become one clear line and exit code 1."""

from __future__ import annotations

import sys
from typing import Callable

from .errors import PipelineError


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
