"""User-facing errors: the CLI prints them as one line and exits non-zero."""


class HemacnnError(Exception):
    """A problem the user can fix (bad path, bad config, unusable data).

    The message names the file or key at fault and says what to do; the CLI prints it
    as a single ``error: ...`` line with no traceback.
    """

    exit_code = 2


class Interrupted(HemacnnError):
    """The user stopped a long job (Ctrl-C); the message says how to continue it."""

    exit_code = 130
