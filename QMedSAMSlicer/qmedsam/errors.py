"""The one error type users see: it says what was wrong and what to do about it."""


class QMedSAMError(Exception):
    """Bad input or environment, explained for the user. The CLI prints it and exits with code 2."""
