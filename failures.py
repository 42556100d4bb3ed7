"""What a failure during a run tells the user: a problem with what they handed the tool, their
machine included, is one line `error: <the problem>: <the fix>`; a programming error keeps its
traceback."""
import functools

import torch

from data import DataError
from settings import UsageError

DEBUG_HINT = "rerun with --debug for the traceback"
# What torch says when an allocation fails, on the CPU (DefaultCPUAllocator) or elsewhere.
OUT_OF_MEMORY_MESSAGES = ("can't allocate memory", "not enough memory", "out of memory")


def one_line(error):
    """The line that reports `error`, or None for a programming error.

    Besides our own one-line errors, two families are the user's whatever raises them: OSError,
    the file system's (a folder made read-only midway, a full disk, a file where a folder should
    be), and UnicodeError, text in another encoding than it claims (a name, a path, a file).
    ValueError, TypeError, KeyError and the like are not: most are our own mistakes and keep
    their traceback, so the user's files are checked where they are read."""
    if isinstance(error, (UsageError, DataError)):
        return str(error)
    if isinstance(error, OSError):
        what = error.filename or "a file"
        return (f"{what}: {error.strerror or error}: fix the path or its permissions, or free disk space; what the "
                f"run finished stays on disk ({DEBUG_HINT})")
    if isinstance(error, (UnicodeEncodeError, UnicodeDecodeError)):  # the two that name the text
        return f"{error.object[:80]!r}: {error.reason}: use UTF-8 names and files ({DEBUG_HINT})"
    return None


def out_of_memory(error):
    return isinstance(error, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(error, RuntimeError) and any(message in str(error) for message in OUT_OF_MEMORY_MESSAGES))


def reports_out_of_memory(run):
    """`run(args)`, where running out of memory, on the GPU or the CPU, from the model's creation
    to the last test pass, is one line naming the two flags that size the run."""
    @functools.wraps(run)
    def checked_run(args):
        try:
            return run(args)
        except (MemoryError, RuntimeError) as e:  # torch.OutOfMemoryError is a RuntimeError
            if not out_of_memory(e):
                raise
            raise UsageError(f"out of memory for CustomResNet --width {args.width} in batches of --bs {args.bs}: "
                             "lower --width (64 is the recipe) or --bs") from e
    return checked_run
