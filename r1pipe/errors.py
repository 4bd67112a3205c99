"""The one error type r1pipe raises for people: what went wrong, where, and what to do."""

from __future__ import annotations


class R1Error(Exception):
    """An error meant for the user. The CLI prints it on one line and exits non-zero (traceback: --debug)."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(R1Error):
    """A command line that cannot mean anything (an override without '='): exit status 2, as click's usage
    errors have."""

    exit_code = 2
    stage: str | None = None  # a stage name given where an override was expected


def one_line(e: BaseException | str, limit: int = 300) -> str:
    """An exception's text on one line, cut at `limit` characters (library messages can run to pages)."""
    text = " ".join(str(e).split()) or (type(e).__name__ if isinstance(e, BaseException) else "")
    return text[:limit] + ("..." if len(text) > limit else "")
