"""Errors that describe a user mistake or a fault the user can fix: the CLI prints their message on one line and
exits with code 2."""


class UserError(Exception):
    """Bad input the user can fix (missing file, wrong config key, ...). The message says what to do."""


class ConfigError(UserError):
    """A config file or `--set` override that does not fit the config schema."""


class OutputError(UserError):
    """An output could not be written completely (disk full, I/O error, encoder failure). Whoever raises it has
    already removed the incomplete file; the message names the file and the cause."""


class DamagedFrameError(UserError):
    """A frame of the input could not be decoded (truncated or corrupt image, undecodable video frame). The
    message names the file (and the frame of a video)."""
