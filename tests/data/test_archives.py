"""Unpacking archives: with the machine's tar and with tarfile, safely, once, and what a full
disk or an interruption leaves."""
import errno
import io
import os
import signal
import tarfile
import time

import pytest

from cifar10_fast.core.errors import DataError
from cifar10_fast.core.lifecycle import SetUpInterrupted
from cifar10_fast.data import archives
from cifar10_fast.data.archives import unpack
from tests.conftest import write_folder, write_tgz

EXTRACTORS = ["tar", "tarfile"]


def unpacked(cache):
    """What the cache's folder of unpacked archives holds, partial folders included."""
    folder = cache / "unpacked"
    return list(folder.iterdir()) if folder.exists() else []


@pytest.fixture(params=EXTRACTORS)
def extractor(request, monkeypatch):
    """Each test twice: with the machine's tar (and tarfile's check beside it), and with tarfile alone."""
    if request.param == "tar" and archives.system_tar() is None:
        pytest.skip("no GNU tar or bsdtar on this machine")
    if request.param == "tarfile":
        monkeypatch.setattr(archives, "system_tar", lambda: None)
    return request.param


def archive_with(tmp_path, *members):
    """The tiny data set as a .tgz, with `members` (TarInfo, content) added."""
    archive = tmp_path / "x.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(write_folder(tmp_path / "cifar10", n_train=1, n_test=1), arcname="cifar10")
        for member, content in members:
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))
    return archive


def member(name, kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info, b"outside" if kind == tarfile.REGTYPE else b""


UNSAFE = {
    "an absolute name": (member("/evil.txt"), "has an absolute name"),
    "a name through ..": (member("cifar10/../../evil.txt"), "leads out of its folder through '..'"),
    "a link to an absolute path": (member("cifar10/evil.txt", tarfile.SYMTYPE, "/etc/passwd"), "links to '/etc/"),
    "a link up the tree": (member("cifar10/evil.txt", tarfile.SYMTYPE, "../../x"), "outside its folder"),
    "a hard link up the tree": (member("cifar10/evil.txt", tarfile.LNKTYPE, "../x"), "outside its folder"),
    "a device file": (member("cifar10/evil.txt", tarfile.CHRTYPE), "is a device file or a pipe"),
    "a pipe": (member("cifar10/evil.txt", tarfile.FIFOTYPE), "is a device file or a pipe"),
}


@pytest.mark.parametrize("unsafe,reason", UNSAFE.values(), ids=UNSAFE.keys())
def test_a_member_that_could_write_outside_is_refused(tmp_path, isolated_cache, extractor, unsafe, reason):
    archive = archive_with(tmp_path, unsafe)
    with pytest.raises(DataError, match=f"{archive} is refused as unsafe \\(member .*{reason}"):
        unpack(archive)
    assert unpacked(isolated_cache) == []  # nothing kept, no partial folder left
    assert not any(tmp_path.rglob("evil.txt")) and not (tmp_path.parent / "evil.txt").exists()


def test_a_link_that_stays_inside_is_unpacked(tmp_path, extractor):
    folder = unpack(archive_with(tmp_path, member("cifar10/link.png", tarfile.SYMTYPE, "train/cat/0000.png")))
    assert (folder / "cifar10" / "link.png").resolve() == folder / "cifar10" / "train" / "cat" / "0000.png"


@pytest.mark.parametrize("keep", [100, 2000, -50])
def test_a_damaged_archive_is_named(tmp_path, isolated_cache, extractor, keep):
    whole = write_tgz(write_folder(tmp_path / "cifar10"), tmp_path / "whole.tgz", "cifar10").read_bytes()
    (tmp_path / "x.tgz").write_bytes(whole[:keep])
    with pytest.raises(DataError, match=f"{tmp_path / 'x.tgz'} is damaged .*: download it again"):
        unpack(tmp_path / "x.tgz")
    assert unpacked(isolated_cache) == []


def tar_saying(tmp_path, stderr):
    """A tar that writes a file, then fails saying `stderr` (GNU tar's messages)."""
    tar = tmp_path / "tar"
    tar.write_text('#!/bin/sh\nwhile [ "$1" != "-C" ]; do shift; done\nprintf half > "$2/written.png"\n'
                   f"cat >&2 <<'EOF'\n{stderr}\nEOF\nexit 2\n")
    tar.chmod(0o755)
    return lambda: str(tar)


def test_a_full_disk_while_tar_unpacks_names_the_disk(tmp_path, isolated_cache, monkeypatch):
    if archives.system_tar() is None:
        pytest.skip("no GNU tar or bsdtar on this machine")
    archive = write_tgz(write_folder(tmp_path / "cifar10"), tmp_path / "x.tgz", "cifar10")
    full = f"the disk holding {isolated_cache / 'unpacked'} is full \\(No space left on device\\): free space on it"
    monkeypatch.setattr(archives, "system_tar", tar_saying(
        tmp_path, "tar: cifar10/train/cat/0003.png: Cannot write: No space left on device\ntar: Exiting with failure "
                  "status"))
    with pytest.raises(DataError, match=full):
        unpack(archive)
    # A file cut short is all tar says of it: the disk tells.
    monkeypatch.setattr(archives, "system_tar",
                        tar_saying(tmp_path, "tar: cifar10/x.png: Wrote only 512 of 10240 bytes"))
    monkeypatch.setattr(archives, "disk_is_full", lambda path: True)
    with pytest.raises(DataError, match=full):
        unpack(archive)
    assert unpacked(isolated_cache) == []


def test_a_full_disk_while_tarfile_unpacks_names_the_disk(tmp_path, isolated_cache, monkeypatch):
    monkeypatch.setattr(archives, "system_tar", lambda: None)
    archive = write_tgz(write_folder(tmp_path / "cifar10"), tmp_path / "x.tgz", "cifar10")

    def no_space(self, tarinfo, targetpath):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), targetpath)

    monkeypatch.setattr(tarfile.TarFile, "makefile", no_space)
    with pytest.raises(DataError, match=f"the disk holding {isolated_cache / 'unpacked'} is full"):
        unpack(archive)
    assert unpacked(isolated_cache) == []


def test_sigterm_while_unpacking_removes_what_was_begun_and_says_so(tmp_path, isolated_cache, extractor):
    archive = write_tgz(write_folder(tmp_path / "cifar10"), tmp_path / "x.tgz", "cifar10")

    def sigterm_midway(*args, **kwargs):
        partial, = (isolated_cache / "unpacked").glob(".partial-*")
        (partial / "begun.png").write_bytes(b"half")
        os.kill(os.getpid(), signal.SIGTERM)  # as a job scheduler sends it
        time.sleep(10)

    unhandled = signal.signal(signal.SIGTERM, lambda *args: pytest.fail("SIGTERM reached no handler of unpack's"))
    try:
        with pytest.MonkeyPatch.context() as patch, pytest.raises(SetUpInterrupted, match=(
                f"interrupted while unpacking {archive}: nothing of it is kept; run the same command again to start it "
                "over")):
            patch.setattr(archives, f"extract_with_{extractor}", sigterm_midway)
            unpack(archive)
    finally:
        signal.signal(signal.SIGTERM, unhandled)
    assert unpacked(isolated_cache) == []
    assert unpack(archive).is_dir()  # and the same command goes on


class Zeros(io.RawIOBase):
    """`size` zero bytes, read as a stream: a member that compresses to almost nothing."""

    def __init__(self, size):
        self.left = size

    def readable(self):
        return True

    def readinto(self, buffer):
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


def bomb(tmp_path, member_sizes):
    """A .tgz of the tiny data set and members of zeros of `member_sizes` bytes: kilobytes that unpack to many more."""
    archive = tmp_path / "bomb.tgz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(write_folder(tmp_path / "cifar10", n_train=1, n_test=1), arcname="cifar10")
        for i, size in enumerate(member_sizes):
            info = tarfile.TarInfo(f"cifar10/train/cat/zeros-{i}.png")
            info.size = size
            tar.addfile(info, io.BufferedReader(Zeros(size)))
    return archive


@pytest.mark.parametrize("sizes,reason", [([64 * 2**20], r"unpacks to 0\.1 GiB, more than any image"),
                                          ([3 * 2**20] * 4, r"its members unpack to more than")])
def test_an_archive_that_unpacks_to_far_more_than_cifar10_is_refused_before_it_fills_the_disk(
        tmp_path, isolated_cache, extractor, monkeypatch, sizes, reason):
    """A 3.9 MB .tgz holding a 3 GiB member was accepted: 269 s, 3.1 GB kept in the cache."""
    monkeypatch.setattr(archives.MemberCheck, "MEMBER_LIMIT", 16 * 2**20)  # the real limits, scaled down
    monkeypatch.setattr(archives.MemberCheck, "TOTAL_LIMIT", 8 * 2**20)
    archive = bomb(tmp_path, sizes)
    assert archive.stat().st_size < 2**20
    with pytest.raises(DataError, match=f"{archive} is refused as unsafe \\(.*{reason}"):
        unpack(archive)
    assert unpacked(isolated_cache) == []
