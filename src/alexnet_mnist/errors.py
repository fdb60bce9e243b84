"""The exception types for expected failures (bad input, bad params, missing files) and the range check."""


class PipelineError(Exception):
    """An error the user can fix; stages print its message without a traceback."""


class ConfigError(PipelineError, ValueError):
    """A setting out of its range, so also a ValueError; the message starts with the setting's key,
    e.g. 'train.lr: ...'."""


def require(ok: bool, key: str, message: str) -> None:
    """Raise ConfigError('<key>: <message>') unless `ok`."""
    if not ok:
        raise ConfigError(f"{key}: {message}")
