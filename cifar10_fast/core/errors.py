"""What the tools tell a user about their input: one `warning:` line for what they repaired, and
for what they refuse one line `error: <the problem>: <the fix>` with exit status 2, no traceback
(`--debug` shows it); and the interpreter for a command they are told to run."""
import errno
import os
import re
import shlex
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

DEBUG_HINT = "rerun with --debug for the traceback"
# The fix for a failure of the file system, by its errno; OS_FIX where the errno does not tell.
OS_FIX = "fix the path or its permissions, or free disk space"
OS_FIXES = {errno.ENOSPC: "free disk space on its drive", errno.EDQUOT: "free space within your disk quota",
            errno.EROFS: "its drive is read-only: choose a folder on a writable one",
            **dict.fromkeys([errno.EACCES, errno.EPERM], "fix its permissions, or choose a folder you can write to"),
            **dict.fromkeys([errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ELOOP, errno.ENAMETOOLONG],
                            "fix the path")}


CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class BadInput(Exception):
    """A problem with what the user gave a tool, worded as one line: `<the problem>: <the fix>`."""


class DataError(BadInput):
    """A problem with the user's data, worded as one line that says what to do."""


def counted(count, noun):
    """'1 epoch', '2 epochs': a count and its noun, singular or plural as English has it."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def printable(text):
    """`text` as a terminal shows it, letter for letter: its control characters (an escape sequence
    in a file or class name would move the cursor, recolour or clear the screen, a newline would
    break a line in two) written as \\xNN. Letters of any script stay as they are."""
    return CONTROL.sub(lambda found: f"\\x{ord(found[0]):02x}", str(text))


def warn(message):
    print(f"warning: {printable(message)}", file=sys.stderr)


def command_to_retype(script):
    """The interpreter and `script` as the user would retype them from the current folder: each by
    its path from here where it lies below (.venv/bin/python train_fastai.py); elsewhere the
    interpreter by its name where the PATH finds this very interpreter by it, else by its whole path
    (a bare `python` may lack every library the run needs), and the script by its whole path.
    Quoted for a POSIX shell, so that a path with spaces pastes and runs."""
    executable, script = Path(sys.executable), Path(script).absolute()
    found = shutil.which(executable.name) if executable.name else None
    on_the_path = found is not None and Path(found).resolve() == executable.resolve()
    interpreter = from_here(executable) or (executable.name if on_the_path else str(executable)) or "python"
    return shlex.join([interpreter, from_here(script) or str(script)])


def shell_path(path):
    """`path` quoted for a POSIX shell, and as ./path where it starts with '-', which a command
    would take for a flag."""
    text = str(path)
    return shlex.quote(f"./{text}" if text.startswith("-") else text)


def from_here(path):
    """`path` relative to the current folder, or None where it does not lie below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return None


def unexpected_line(error):
    """The line for an OSError or a UnicodeError that no check of ours foresaw, or None for any
    other exception. Those two are the user's whatever raises them: the file system's (a missing
    folder, no permission, a full disk) and text in another encoding than it claims. ValueError,
    TypeError and the like are mostly our own mistakes and keep their traceback, so the user's
    files are checked where they are read."""
    if isinstance(error, OSError):
        path = error.filename or "a file"
        then = "".join(f"; {note}" for note in getattr(error, "__notes__", ()))  # what was kept, how to go on
        return f"{path}: {error.strerror or error}: {OS_FIXES.get(error.errno, OS_FIX)}{then} ({DEBUG_HINT})"
    if isinstance(error, (UnicodeEncodeError, UnicodeDecodeError)):  # the two that hold their text
        return f"{error.object[:80]!r}: {error.reason}: use UTF-8 names and files ({DEBUG_HINT})"
    if isinstance(error, Warning):  # a library's warning, raised as an error
        return (f"{type(error).__name__}: {' '.join(str(error).split())}: a library's warning, made an error by "
                f"PYTHONWARNINGS ({os.environ.get('PYTHONWARNINGS', 'unset')}) or -W: let warnings be warnings "
                f"to run ({DEBUG_HINT})")
    return None


def loading_failure_line(error):
    """The line for an exception raised while an entry point loads its libraries (torch, fastai,
    matplotlib) that is the machine's or the environment's, not ours; None for any other."""
    if isinstance(error, (MemoryError, ImportError, OSError)):
        return (f"the libraries could not be loaded ({type(error).__name__}: {' '.join(str(error).split())}): "
                f"check the install (make setup) and the memory this process may take (ulimit -v) ({DEBUG_HINT})")
    return unexpected_line(error)


@contextmanager
def one_line_errors(debug):
    """Bad input raised inside the block ends the tool with its one `error:` line and exit status 2;
    with `debug`, and for a programming error, the traceback instead."""
    try:
        yield
    except Exception as e:
        line = str(e) if isinstance(e, BadInput) else unexpected_line(e)
        if debug or line is None:
            raise
        print(f"error: {printable(line)}", file=sys.stderr)
        sys.exit(2)
