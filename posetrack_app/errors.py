"""Errors that describe a user mistake: the CLI prints their message on one line and exits with code 2."""


class UserError(Exception):
    """Bad input the user can fix (missing file, wrong config key, ...). The message says what to do."""


class ConfigError(UserError):
    """A config file or `--set` override that does not fit the config schema."""
