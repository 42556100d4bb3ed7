"""The cache folder (CIFAR10_CACHE, default ~/.cache/cifar10-fast) that archives are unpacked,
python batches written out and decoded pixels kept in, so that every run after the first starts
in seconds.

Several runs may use it at once, and any of them may be stopped at any moment or find the disk
full. So an entry is built under a temporary `.partial-` name and renamed into place whole; a run
stopped by Ctrl-C or SIGTERM removes what it had begun and says so in one line (one killed
outright has it removed by the next run on the machine); and a disk that is full or will not be
written is named in one line with the fix, never taken for a damaged archive.
"""
import errno
import hashlib
import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path

from cifar10_fast.core.errors import DataError
from cifar10_fast.core.lifecycle import SetUpInterrupted, stopping_on_signals
from cifar10_fast.core.settings import NO_HOME

PARTIAL = ".partial-"
# The errors that are the cache's disk's or its permissions', not the data's.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
FULL_BELOW = 2**20
# The cache's folders of the entries that build_once makes: unpacked archives, converted batches.
UNPACKED, CONVERTED = "unpacked", "converted"


def built_once(path):
    """Whether `path` lies in an entry that `build_once` made (an unpacked archive, converted python
    batches): renamed into place whole and never changed after, since a changed source gets an
    entry of its own."""
    path, root = Path(path).resolve(), cache_root()
    return any(path.is_relative_to(root / kind) for kind in (UNPACKED, CONVERTED))


def cache_root():
    # An empty CIFAR10_CACHE is unset, as an empty CIFAR10_DATA is: not the current folder. Resolved,
    # so that the folders a run records in its config.json hold from any folder it is resumed in.
    cache = os.environ.get("CIFAR10_CACHE")
    if not cache and os.environ.get("HOME") == "":  # Path.home() would be /
        raise DataError(NO_HOME)
    return Path(cache or Path.home() / ".cache" / "cifar10-fast").expanduser().resolve()


def entry_name(path, stamped=True, members=()):
    """A cache entry's name for `path`: its name and a hash of where it resolves to (so ../data and
    /abs/data share an entry) and, `stamped`, of its size and modification time (so a replaced
    archive is unpacked again), or of those of each of its `members` that is there (the files of a
    folder that the entry is built from: an edited one is built again)."""
    path = Path(path).resolve()
    stamps = [stamp(path / member) for member in members if (path / member).exists()] if members else [stamp(path)]
    text = ":".join([str(path), *stamps]) if stamped else str(path)
    return f"{path.name.split('.')[0]}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def stamp(path):
    stat = path.stat()
    return f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}"


def cache_problem(error, path):
    """The line for an OSError while writing the cache at `path` that is the disk's or its
    permissions' (full, read-only, not ours), or None for any other."""
    if error.errno in DISK_FULL:
        return (f"the disk holding {path} is full ({os.strerror(error.errno)}): free space on it, or set "
                "CIFAR10_CACHE to a folder on a disk with room (CIFAR-10 takes about 0.5 GB there)")
    if error.errno in NOT_WRITABLE:
        return (f"cannot write the cache folder {path} ({os.strerror(error.errno)}): set CIFAR10_CACHE to a "
                "folder you can write to")
    return None


def disk_is_full(path):
    """Whether the disk holding `path` has no room left for another file: under FULL_BELOW bytes,
    or no free inodes (on file systems that count them)."""
    if not hasattr(os, "statvfs"):  # Windows
        return False
    disk = os.statvfs(path)
    return disk.f_bavail * disk.f_frsize < FULL_BELOW or (disk.f_files > 0 and disk.f_favail == 0)


@contextmanager
def writing_to(path):
    """An OSError of the disk or its permissions inside the block becomes one line naming `path`."""
    try:
        yield
    except OSError as e:
        problem = cache_problem(e, path)
        if problem is None:
            raise
        raise DataError(problem) from None


@contextmanager
def interruptible(doing):
    """Ctrl-C, or SIGTERM (what a scheduler sends before it kills a job), inside the block ends it
    with SetUpInterrupted, saying it stopped while `doing`. The first one ends the block; any more
    are ignored until the block's own clean-up has run, so that it is never left half done."""
    with stopping_on_signals():
        try:
            yield
        except KeyboardInterrupt:
            raise SetUpInterrupted(f"interrupted while {doing}") from None


def new_partial(folder, directory=True):
    """A new temporary entry in `folder`, named for this machine and process, so that the next run
    can tell whether the process that made it is gone."""
    make = tempfile.mkdtemp if directory else tempfile.mkstemp
    made = make(dir=folder, prefix=f"{PARTIAL}{socket.gethostname()}-{os.getpid()}-")
    if not directory:
        os.close(made[0])
    return Path(made if directory else made[1])


def remove_abandoned(folder):
    """Remove the temporary entries in `folder` of processes of this machine that are gone (killed
    outright, or the machine stopped): nothing else would."""
    for partial in folder.glob(f"{PARTIAL}*"):
        host, _, pid = partial.name[len(PARTIAL):].rpartition("-")[0].rpartition("-")  # host-pid-random
        if host == socket.gethostname() and pid.isdigit() and not process_exists(int(pid)):
            remove(partial)


def process_exists(pid):
    if os.name != "posix":  # elsewhere os.kill(pid, 0) would end the process: say it runs
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def remove(path):
    """Remove a temporary file or folder."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def build_once(target, build, doing):
    """Run `build(tmp)` into a temporary folder beside `target` and rename it to `target`, so that
    an interrupted or failed build never leaves half an entry; `doing` says what it does."""
    if target.exists():
        return target
    with writing_to(target.parent):
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_abandoned(target.parent)
        tmp = new_partial(target.parent)
    with interruptible(f"{doing}: nothing of it is kept; run the same command again to start it over"):
        try:
            with writing_to(target.parent):
                build(tmp)
                try:
                    tmp.rename(target)
                except OSError:
                    if not target.exists():
                        raise
                    # Another process (two runs started together) built the same entry first: use theirs.
        finally:
            remove(tmp)
    return target


def write_atomically(path, write):
    """`write(tmp)` a file under a temporary name beside `path`, then rename it to `path`: a full
    disk or an interruption leaves no half-written file, and two processes never write into one."""
    tmp = new_partial(path.parent, directory=False)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        remove(tmp)
