"""Files written so that a crash never leaves half of one: under a temporary name in the same
folder, then renamed into place (a rename within a folder is atomic on POSIX file systems); and
new names that never take an existing one's place."""
import errno
import json
import os
import re
import shutil
from contextlib import contextmanager
from functools import cache

from errors import BadInput


# What torch's zip writer (torch.save) says when a write fails: "PytorchStreamWriter failed writing
# file ...", or a check of the bytes written in inline_container.cc; the errno is gone.
TORCH_WRITER = re.compile(r"PytorchStreamWriter|inline_container")


@cache
def new_file_mode():
    """The mode open() gives a new file: 0666 less the umask, which can only be read by setting it."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic(path):
    """A temporary name to write `path` under; renamed to `path` once written, with the mode a
    file that open() creates gets (safetensors writes its files 0600). A write that fails leaves
    nothing behind, and is an OSError that names `path` (see write_failure)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        if tmp.exists():  # fastai's export writes nothing in all but the main process
            os.chmod(tmp, new_file_mode())
            os.replace(tmp, path)
    except Exception as e:
        failure = write_failure(e, path, tmp)
        if failure is None or failure is e:
            raise
        raise failure from e
    finally:
        tmp.unlink(missing_ok=True)


def write_failure(error, path, tmp):
    """The OSError, naming `path`, of a write to `tmp` that failed with `error`; None where that was
    no failure of the machine."""
    if isinstance(error, OSError):
        if error.filename in (None, str(tmp)):  # a write names no file, an open the temporary one
            error.filename = str(path)
        return error
    if type(error).__name__ == "SafetensorError":  # safetensors holds the errno in its message only
        found = re.search(r"\(os error (\d+)\)", str(error))
        number = int(found[1]) if found else None
    elif isinstance(error, RuntimeError) and TORCH_WRITER.search(str(error)):  # torch.save (fastai's export) loses it
        number = errno.ENOSPC if drive_full(path) else errno.EIO
    else:
        return None
    return OSError(number, os.strerror(number), str(path)) if number else None


def drive_full(path, room=2**20):
    """Whether the drive of `path` has less than `room` bytes left for this user."""
    try:
        return shutil.disk_usage(path.parent).free < room
    except OSError:
        return False


def write_json(path, obj):
    with atomic(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def write_csv(path, table):
    with atomic(path) as tmp:
        table.to_csv(tmp, index=False)


def check_new_file(path, flag):
    """Refuse, before any work, the output file a flag names if it would overwrite something or
    has no folder to go into."""
    if path.is_dir():
        raise BadInput(f"{flag} {path} is a folder: give {flag} a file name")
    if os.path.lexists(path):  # a link that leads nowhere too: writing would replace the user's link
        as_link = " (as a link)" if path.is_symlink() else ""
        raise BadInput(f"{path} exists already{as_link}: give {flag} a new file name")
    if not path.parent.is_dir():
        raise BadInput(f"{path.parent} is not a folder: give {flag} a file in an existing folder, or create it first")


def figures_to_files():
    """matplotlib set up for figures that go to files: no window (Agg), and every label plain text.
    Class and run names are the user's: with mathtext a '$' in one is TeX, and an unknown command
    in it fails the figure, after training, so that the run's outputs are lost."""
    import matplotlib
    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False


def save_figure(fig, path):
    """A matplotlib figure as an image file (the format from the suffix), then closed."""
    import matplotlib.pyplot as plt  # here, so that predict.py, which only needs atomic(), never loads it
    with atomic(path) as tmp:
        fig.savefig(tmp, format=path.suffix[1:], dpi=120, bbox_inches="tight")
    plt.close(fig)


def unused_names(stem, attempts=999):
    """`stem`, then `stem-2`, `stem-3`, ...: the names to try, in order, for something new."""
    yield stem
    for attempt in range(2, attempts + 1):
        yield f"{stem}-{attempt}"
