"""The cache folder: where it is, entries built whole, what stopped processes leave, its disk."""
import errno
import os
import subprocess
import sys

import pytest

from cifar10_fast.data import cache
from cifar10_fast.data.cache import build_once, cache_root, entry_name


def test_a_relative_cache_variable_is_made_absolute(tmp_path, monkeypatch):
    """Runs record folders in the cache; a resume from another folder must find them."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CIFAR10_CACHE", "my-cache")
    assert cache_root() == tmp_path / "my-cache"


def test_an_entry_is_named_for_where_its_source_resolves(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert entry_name("../data") == entry_name(tmp_path / "data") == entry_name(tmp_path / "elsewhere" / ".." / "data")


def test_a_cache_entry_built_by_another_process_meanwhile_is_used(tmp_path):
    """Two runs started together unpack the same archive; the one that finishes second keeps the
    first one's entry instead of failing on a folder that is not empty."""
    target = tmp_path / "entry"

    def build_while_another_process_finishes(tmp):
        (tmp / "mine.txt").write_text("mine")
        target.mkdir()
        (target / "theirs.txt").write_text("theirs")

    assert build_once(target, build_while_another_process_finishes, "building") == target
    assert [p.name for p in target.iterdir()] == ["theirs.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]  # no partial build left behind


def test_what_a_killed_process_began_is_removed_by_the_next(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = cache.socket.gethostname()
    abandoned = tmp_path / f"{cache.PARTIAL}{host}-{gone.stdout.strip()}-abc_123"
    (abandoned / "cifar10").mkdir(parents=True)
    running = tmp_path / f"{cache.PARTIAL}{host}-{os.getpid()}-def456"  # this process's: still being built
    running.mkdir()
    other_host = tmp_path / f"{cache.PARTIAL}another-host-{gone.stdout.strip()}-ghi789"  # a shared disk's
    other_host.mkdir()
    build_once(tmp_path / "entry", lambda tmp: None, "building")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["entry", running.name, other_host.name])


def test_a_full_disk_and_a_read_only_cache_are_named_with_the_fix(tmp_path, monkeypatch):
    def fail(code):
        def make(*args, **kwargs):
            raise OSError(code, os.strerror(code), str(tmp_path / "x"))
        return make

    monkeypatch.setattr(cache.tempfile, "mkdtemp", fail(errno.EROFS))
    with pytest.raises(cache.DataError, match=f"cannot write the cache folder {tmp_path} \\(Read-only file system\\): "
                                              "set CIFAR10_CACHE to a folder you can write to"):
        build_once(tmp_path / "entry", lambda tmp: None, "building")
    monkeypatch.undo()

    with pytest.raises(cache.DataError, match=f"the disk holding {tmp_path} is full \\(No space left on device\\): "
                                              "free space on it, or set CIFAR10_CACHE"):
        build_once(tmp_path / "entry", fail(errno.ENOSPC), "building")
    assert list(tmp_path.iterdir()) == []
