"""Archives (.tgz, .tar.gz, .tar) unpacked into the cache, once, with the machine's tar where it
is GNU tar or bsdtar: it writes CIFAR-10's 60,000 files in a few seconds, where Python's tarfile
takes half a minute.

An archive can hold members that would write outside the folder it is unpacked in. While tar
writes, tarfile reads the member headers on another core and refuses the archive at the first such
member; tar's own defaults (a leading / dropped, `..` skipped, nothing written through a link)
keep them inside the temporary folder meanwhile, and that folder is removed. Without such a tar,
tarfile unpacks it, checked member by member the same way.
"""
import errno
import os
import shutil
import subprocess
import tarfile
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from functools import cache, partial
from pathlib import PurePosixPath

from cifar10_fast.core.errors import DataError
from cifar10_fast.data.cache import (
    DISK_FULL,
    NOT_WRITABLE,
    UNPACKED,
    build_once,
    cache_problem,
    cache_root,
    disk_is_full,
    entry_name,
)


def unpack(archive):
    """The folder in the cache that `archive` is unpacked into, unpacked first if it is not yet."""
    try:
        is_archive = tarfile.is_tarfile(archive)
    except EOFError as e:  # a .tgz cut off before the end of tar's first header
        raise damaged_archive(archive, e) from e
    if not is_archive:
        raise DataError(f"{archive} is not a folder or a .tgz/.tar.gz archive: point --data at one of those")
    tar = system_tar()

    def extract(tmp):
        print(f"unpacking {archive} into the cache (once)")
        if tar:
            extract_with_tar(tar, archive, tmp)
        else:
            extract_with_tarfile(archive, tmp)

    return build_once(cache_root() / UNPACKED / entry_name(archive), extract, f"unpacking {archive}")


@cache
def system_tar():
    """The machine's tar where it is GNU tar or bsdtar, whose flags and defaults this relies on; else None."""
    tar = shutil.which("tar")
    if tar is None:
        return None
    try:
        version = subprocess.run([tar, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return tar if "GNU tar" in version or "bsdtar" in version else None


def extract_with_tar(tar, archive, tmp):
    """tar writes while check_members reads the headers; a member it refuses stops tar at once (a
    bomb's gigabytes are not written first)."""
    stop = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        checked = pool.submit(check_members, archive, stop)
        untar = subprocess.Popen([tar, "-x", "-f", str(archive), "-C", str(tmp), "--no-same-owner",
                                  "--no-same-permissions"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, encoding="utf-8", errors="replace",
                                 env={**os.environ, "LC_ALL": "C"})
        try:
            stderr = tar_output_unless_refused(untar, checked)
            checked.result()  # an unsafe or damaged member is the reason, whatever tar made of it
        except BaseException:  # Ctrl-C included
            stop.set()
            raise
        finally:
            untar.kill()
            untar.wait()
    if untar.returncode:
        raise tar_failure(archive, tmp.parent, stderr)


def tar_output_unless_refused(untar, checked):
    """What tar says by its end, or None where the check refused a member first (tar is stopped)."""
    while True:
        try:
            return untar.communicate(timeout=0.1)[1]
        except subprocess.TimeoutExpired:
            if checked.done() and checked.exception():
                return None


def check_members(archive, stop):
    """Refuse `archive` at its first member that could write outside its folder, reading the
    member headers as a stream (the files' contents are skipped)."""
    refusal = MemberCheck()
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                reason = refusal(member)
                if reason:
                    raise refused(archive, reason)
                if stop.is_set():
                    return
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise damaged_archive(archive, e) from e


class MemberCheck:
    """Why an archive's next member is refused, or None: it could write outside its folder
    (`unsafe`), or it, or the members so far, are larger than any CIFAR-10 copy holds (a few KB an
    image, 0.2 GB in all): an archive of a few MB can unpack to gigabytes."""
    MEMBER_LIMIT, TOTAL_LIMIT = 100 * 2**20, 8 * 2**30

    def __init__(self):
        self.total = 0

    def __call__(self, member):
        self.total += member.size
        if member.size > self.MEMBER_LIMIT:
            return f"member {member.name!r} unpacks to {member.size / 2**30:.1f} GiB, more than any image"
        if self.total > self.TOTAL_LIMIT:
            return f"its members unpack to more than {self.TOTAL_LIMIT / 2**30:.0f} GiB, far more than CIFAR-10"
        return unsafe(member)


def unsafe(member):
    """Why `member` could write outside the folder it is unpacked in, or None. Judged on its names
    alone, as tar writes meanwhile: an absolute name (tar drops the leading / when it makes an
    archive unless told not to, so an archive that keeps it was made to write elsewhere), `..` in
    its name or in a link's target, an absolute link target, or a device file or pipe."""
    name = PurePosixPath(member.name)
    if member.name.startswith("/"):
        return f"member {member.name!r} has an absolute name"
    if ".." in name.parts:
        return f"member {member.name!r} leads out of its folder through '..'"
    if member.issym() or member.islnk():
        target = PurePosixPath(member.linkname)
        if member.linkname.startswith("/") or ".." in target.parts:
            return f"member {member.name!r} links to {member.linkname!r}, outside its folder"
    elif not (member.isfile() or member.isdir()):
        return f"member {member.name!r} is a device file or a pipe"
    return None


def extract_with_tarfile(archive, tmp):
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter=partial(checked_member, archive, MemberCheck()))
    except tarfile.FilterError as e:
        raise refused(archive, e) from e
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise damaged_archive(archive, e) from e
    except OSError as e:
        if cache_problem(e, tmp.parent):
            raise  # the disk's: build_once names it
        raise damaged_archive(archive, e) from e


def checked_member(archive, refusal, member, dest_path):
    """tarfile's filter: the members `refusal` refuses refused, then tarfile's "data" filter (which
    also drops the owner and the permission bits an archive should not set)."""
    reason = refusal(member)
    if reason:
        raise refused(archive, reason)
    return tarfile.data_filter(member, dest_path)


def tar_failure(archive, folder, stderr):
    """The error for tar's failure to unpack an archive that tarfile read whole: the disk's, named
    with `folder`, or else the archive's. tar runs in the C locale, so its messages hold strerror's
    text, except where a file was cut short ("Wrote only 512 of 10240 bytes"): the disk says then."""
    for code in (*DISK_FULL, *NOT_WRITABLE):
        if os.strerror(code) in stderr or (code == errno.ENOSPC and disk_is_full(folder)):
            return DataError(cache_problem(OSError(code, os.strerror(code)), folder))
    return damaged_archive(archive, (stderr.strip().splitlines() or ["tar failed"])[0])


def refused(archive, reason):
    return DataError(f"{archive} is refused as unsafe ({reason}): unpack only a CIFAR-10 archive you trust, "
                     "or download it again")


def damaged_archive(archive, error):
    return DataError(f"{archive} is damaged ({error}): download it again")
