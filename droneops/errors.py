"""Exceptions that mean "the user gave bad input" (CLI exit code 2, no traceback)."""


class UserError(Exception):
    """Bad input from a user: a file, an option, a command. The message says what and where."""
