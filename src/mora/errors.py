"""Typed errors. `InputError` is the user's to fix (CLI exit 2); everything else is ours (exit 1)."""

from __future__ import annotations


class MoraError(Exception):
    """Base class of every error Mora raises on purpose."""

    #: Exit code the `mora` command uses for this error.
    exit_code: int = 1


class InputError(MoraError, ValueError):
    """Bad input: a path, a value or an option the user can fix.

    The message names the argument, the value and the fix, on one line.

    Example:
        >>> raise InputError("--num-frames: got 0; pass a positive integer such as 25")
    """

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).strip().splitlines()))  # one line, always


def bad_input(argument: str, value: object, problem: str, fix: str) -> InputError:
    """Build an `InputError` with the standard shape: `ARGUMENT: VALUE PROBLEM; FIX`.

    Example:
        >>> raise bad_input("image", "cat.txt", "is not an image", "pass a PNG, JPEG, WebP or GIF file")
    """
    return InputError(f"{argument}: {value!r} {problem}; {fix}")


class ModelUnavailableError(MoraError):
    """A model's weights are neither local nor downloadable. Fixable by the user, so exit 2."""

    exit_code = 2


class ModelLoadError(MoraError):
    """A model's weights are here but cannot be read: a corrupt or truncated file, a full disk, a read-only
    or failing file system, a file this user may not read.

    Never reported as "not available" (`ModelUnavailableError`): the message names the model, the path
    when known and the OS error, on one line. Exit 1: no option of the command fixes it, the machine does.
    """


class MediaTimeoutError(MoraError, TimeoutError):
    """Reading a media file took longer than its bound: the file may be fine, the machine too busy.

    Never reported as "not a video": the message names the file, the bound and what to try.
    """


class LLMError(MoraError):
    """The LLM endpoint failed or answered with something we cannot use."""


class Cancelled(MoraError):
    """The job was stopped on request (a cancel, a deleted job, Ctrl-C) between two denoising or agent steps.

    A clean stop: the artifacts finished so far are kept, nothing is written at `out`.
    """

    exit_code = 130  # as an interrupted command


class ReviewAborted(MoraError):
    """The human reviewer aborted the job: a clean stop, nothing is written at `out`."""

    exit_code = 1
