"""User-facing errors: the CLI prints them as one line and exits non-zero."""

import os
import shlex


def command_line(*args: str | os.PathLike) -> str:
    """``hemacnn ARGS`` as a user pastes it into a shell: each argument quoted where it must be
    (a path with spaces stays one argument)."""
    return " ".join(["hemacnn", *(shlex.quote(str(a)) for a in args)])


class HemacnnError(Exception):
    """A problem the user can fix (bad path, bad config, unusable data).

    The message names the file or key at fault and says what to do; the CLI prints it
    as a single ``error: ...`` line with no traceback.
    """

    exit_code = 2


class Interrupted(HemacnnError):
    """The user stopped a long job (Ctrl-C); the message says how to continue it."""

    exit_code = 130


class UnreadableImage(HemacnnError):
    """One image file that cannot be classified: ``reason`` says why in a few words.

    Callers that handle many files (predict, serve, explain) turn it into a per-file result
    instead of stopping; the message alone is the one-line error for a single file.
    """

    def __init__(self, path: str, reason: str, message: str | None = None):
        self.path, self.reason = str(path), reason
        super().__init__(message or f"cannot read image {path}: {reason}; check the file or "
                         "run `hemacnn scan` on its folder")
