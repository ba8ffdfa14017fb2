"""Typed errors. `InputError` is the user's to fix (CLI exit 2); everything else is ours (exit 1)."""

from __future__ import annotations

from collections.abc import Callable


class MoraError(Exception):
    """Base class of every error Mora raises on purpose."""

    #: Exit code the `mora` command uses for this error.
    exit_code: int = 1


class InputError(MoraError, ValueError):
    """Bad input: a path, a value or an option the user can fix.

    The message names the argument, the value and the fix, on one line. An error about one field of
    the job model carries that field's name as `param` (`num_frames`) and its message is the text
    after it; each front door names the field its own way (`spelled`): the command line
    `--num-frames: ...`, the service and MCP `num_frames: ...` (and OpenAI's `param`). `str(e)` is
    the field's own name, as a job line, a request or a Python caller writes it.

    An error built from a message alone (`param` None) names what it is about in its own text: the
    transitional form of raise sites not yet converted, and of errors about no field (`job: ...`).

    Example:
        >>> e = InputError("0 is out of range; pass a number >= 2", param="num_frames")
        >>> str(e), e.spelled(spell_flag)  # mora.workflows.jobspec.spell_flag: the command line's names
        ('num_frames: 0 is out of range; pass a number >= 2', '--num-frames: 0 is out of range; pass a number >= 2')
    """

    exit_code = 2

    def __init__(self, message: str, *, param: str | None = None, path: str = "", where: str | None = None):
        """`message`: the text after the field when `param` is given, else the whole line. `path`: a
        place inside the field (`.id`, `[0]`). `where`: a prefix naming the source (`jobs.jsonl:3`)."""
        self.detail = " ".join(str(message).strip().splitlines())  # one line, always
        self.param, self.path, self.where = param, path, where
        super().__init__(self.spelled())

    def spelled(self, spell: Callable[[str], str] | None = None) -> str:
        """The line with the field named by `spell` (a front door's speller; None: the field's own name)."""
        head = f"{self.where}: " if self.where else ""
        if self.param is not None:
            head += f"{spell(self.param) if spell else self.param}{self.path}: "
        return head + self.detail

    def at(self, where: str | None) -> InputError:
        """This error with a source prefix (`jobs.jsonl:3: steps: ...`), its field kept."""
        if not where:
            return self
        return InputError(self.detail, param=self.param, path=self.path,
                          where=f"{where}: {self.where}" if self.where else where)


def bad_input(argument: str, value: object, problem: str, fix: str) -> InputError:
    """Build an `InputError` about `argument` with the standard shape: `ARGUMENT: VALUE PROBLEM; FIX`.

    Example:
        >>> raise bad_input("image", "cat.txt", "is not an image", "pass a PNG, JPEG, WebP or GIF file")
    """
    return InputError(f"{value!r} {problem}; {fix}", param=argument)


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


def one_line(error: BaseException, limit: int | None = None, mask: Callable[[str], str] | None = None,
             typed: bool | None = None) -> str:
    """`Type: message` on one line: for a job's error, a log line, a fault shown to an LLM.

    The message's first line only (the rest of an endpoint's or a library's error is detail that
    belongs in a traceback, and a line of a table or a tool answer must stay one line). A
    `MoraError`'s message was written for the user and says what failed, so it comes without its
    type; an empty message gives the type alone.

    Args:
        error: the exception.
        limit: the most characters of the message kept (the type is always whole); None keeps all.
        mask: applied to the whole message before it is cut (a secret cut in two would leak its head).
        typed: prefix the type (True), never (False: a message written for its reader, such as an
            LLM's unusable answer), or by the rule above (None).

    Example:
        >>> one_line(RuntimeError("CUDA out of memory.\\nTried to allocate 2 GiB"))
        'RuntimeError: CUDA out of memory.'
        >>> one_line(InputError("--steps: got 0; pass a positive integer"))
        '--steps: got 0; pass a positive integer'
    """
    lines = (mask(str(error)) if mask else str(error)).strip().splitlines()
    text = lines[0].strip()[:limit] if lines else ""
    if not text:
        return type(error).__name__
    plain = isinstance(error, MoraError) if typed is None else not typed
    return text if plain else f"{type(error).__name__}: {text}"
