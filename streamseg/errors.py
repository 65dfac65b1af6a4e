"""Error types that the CLI turns into one clear line and an exit code."""

from __future__ import annotations


class StreamsegError(Exception):
    """Base class of every error streamseg raises on purpose."""


class UserError(StreamsegError):
    """Bad input from the user (config, file, URL, checkpoint): exit code 2, one line, no traceback."""

    exit_code = 2


class ConfigError(UserError):
    """A pipeline or training config is invalid; ``lines`` holds one message per problem."""

    def __init__(self, lines: list[str] | str):
        self.lines = [lines] if isinstance(lines, str) else list(lines)
        super().__init__("\n".join(self.lines))


class CheckpointError(UserError):
    """A weights file is missing, truncated, foreign or does not match the model."""


class SourceError(UserError):
    """A video source cannot be opened (missing file, no camera, dead URL)."""


class SinkError(UserError):
    """An output cannot be written (no display, unwritable path, unknown encoder)."""
