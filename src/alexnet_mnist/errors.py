"""The one exception type for expected failures: bad input, bad params, missing files."""


class PipelineError(Exception):
    """An error the user can fix; stages print its message without a traceback."""
