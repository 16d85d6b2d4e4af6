"""Error types shared by every package. ``UserError`` is bad input (a flag, a file, the environment): command
lines print it as one line and exit with status 2."""
from __future__ import annotations


class UserError(ValueError):
    """Bad input; the message names the flag, file or variable at fault."""


class ConfigError(UserError):
    """An invalid study configuration."""


class CheckpointError(UserError):
    """An unreadable, truncated or foreign checkpoint."""
