"""How a job stops early: one line for the user, and finished steps kept for the next try."""

from __future__ import annotations


class JobError(Exception):
    """A job stopped for a reason the user can act on; the message is one line. Finished steps are kept."""


class JobCancelled(JobError):
    """The cancel event was set; the job resumes where it stopped when run again."""

    def __init__(self, message: str = "cancelled; run it again to resume where it stopped") -> None:
        super().__init__(message)


def from_conversion_error(error: Exception) -> JobError:
    """A converters error as the job error it means (cancelled stays cancelled)."""
    from converters import ConversionCancelled

    return JobCancelled() if isinstance(error, ConversionCancelled) else JobError(str(error))
