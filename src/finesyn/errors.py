"""One base class for every failure a user can fix (bad params, missing or damaged files, bad
images, a full disk, a busy output, an unavailable device, a diverged run).

The stage CLIs catch `UserError` once (`finesyn.cli.user_errors`) and print its message, which
names the key or file and what was expected, as one line with exit code 2 instead of a traceback.
Each subclass also keeps its natural built-in base (ValueError, OSError, ...), so library callers
can catch either.
"""


class UserError(Exception):
    """A failure the user can fix; its message says what to change."""
