"""A folder listed and decoded once: its cache (written whole, by resolved path), what a full or
read-only disk and an interruption leave, the fingerprint, the rows a run uses."""
import errno
import hashlib
import multiprocessing
import os
import signal
import threading
import time
import warnings

import numpy as np
import pytest

from cifar10_fast.core.errors import DataError
from cifar10_fast.core.lifecycle import SetUpInterrupted
from cifar10_fast.data import decoded_folder as decoded
from cifar10_fast.data import images
from cifar10_fast.data.decoded_folder import decoded_folder
from cifar10_fast.data.sources import cifar10_folder
from tests.conftest import CLASSES, class_image, write_folder, write_tgz


def cached_files(cache):
    """The decoded cache's entries: each an index (.npz) that names its pixels (.npy)."""
    folder = cache / "decoded"
    return sorted(p.name for p in folder.glob("*.npz")) if folder.exists() else []


def test_a_folder_is_decoded_once_by_where_it_resolves(tiny_folder, isolated_cache, monkeypatch, capsys):
    decoded_folder(tiny_folder)
    assert "decoding 100 images" in capsys.readouterr().out
    monkeypatch.chdir(tiny_folder / "train")
    data = decoded_folder("../../cifar10")
    assert "decoding" not in capsys.readouterr().out and len(cached_files(isolated_cache)) == 1
    assert (data.images[data.labels == 3] == class_image(3)).all() and data.readable.all()


def test_a_warm_cache_maps_its_pixels_and_one_it_cannot_map_is_decoded_again(tiny_folder, isolated_cache, capsys):
    decoded = decoded_folder(tiny_folder)
    index, = (isolated_cache / "decoded").glob("*.npz")
    pixels, = (isolated_cache / "decoded").glob("*.npy")
    warm = decoded_folder(tiny_folder)
    assert isinstance(warm.images, np.memmap) and not warm.images.flags.writeable
    assert np.array_equal(warm.images, decoded.images) and np.array_equal(warm.readable, decoded.readable)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns of a tensor over memory it must not write to
        rows = warm.nchw(np.arange(3))
    rows += 1  # its own memory, not the map's
    assert np.array_equal(warm.images[:3], decoded.images[:3])
    pixels.write_bytes(pixels.read_bytes()[:1000])  # cut short: what the index names cannot be mapped
    capsys.readouterr()
    again = decoded_folder(tiny_folder)
    assert "decoding 100 images" in capsys.readouterr().out and np.array_equal(again.images, decoded.images)
    assert [p.name for p in (isolated_cache / "decoded").glob("*.npy")] != [pixels.name]  # a new file, the old gone
    assert len(list((isolated_cache / "decoded").glob("*.npy"))) == 1 and index.is_file()


def test_the_files_of_an_unpacked_archive_are_stamped_from_the_cache_and_those_of_a_folder_given_are_not(
        tiny_folder, isolated_cache, monkeypatch):
    """An archive the cache unpacked never changes (a changed archive is unpacked anew), so a warm
    run takes its files' sizes and times from the decoded cache; a folder the user gave has its
    files stat'ed every run, so that a file changed in it is decoded again."""
    unpacked = cifar10_folder(write_tgz(tiny_folder, tiny_folder.parent / "tiny.tgz", "cifar10"))
    stamped = []
    real_file_stamps = decoded.file_stamps
    monkeypatch.setattr(decoded, "file_stamps", lambda folder, names: stamped.append(folder) or
                        real_file_stamps(folder, names))
    cold = decoded_folder(unpacked)
    warm = decoded_folder(unpacked)
    assert stamped == [unpacked] and warm.fingerprint == cold.fingerprint
    assert np.array_equal(warm.sizes, [os.path.getsize(unpacked / name) for name in warm.names])
    decoded_folder(tiny_folder)
    decoded_folder(tiny_folder)
    assert stamped == [unpacked, tiny_folder, tiny_folder]


def test_the_fingerprint_counts_the_image_files_and_hashes_their_names_and_sizes(tiny_folder):
    (tiny_folder / "train" / "cat" / "notes.txt").write_text("not an image, not read")
    (tiny_folder / "train" / "cat" / "sub").mkdir()
    listing = sorted(f"{image.relative_to(tiny_folder)}\t{image.stat().st_size}\n"
                     for image in tiny_folder.glob("*/*/*.png"))
    assert decoded_folder(tiny_folder).fingerprint == {
        "data_files": 100, "data_sha256": hashlib.sha256("".join(listing).encode()).hexdigest()}


def test_the_rows_of_a_run_are_the_class_interleaved_training_images_then_the_test_images(tiny_folder):
    data = decoded_folder(tiny_folder)
    train, test = data.rows(subset=15)
    assert [CLASSES[k] for k in data.labels[train]] == CLASSES + CLASSES[:5] and data.is_test[test].all()
    assert len(data.rows()[0]) == 80 and len(test) == 20
    with pytest.raises(DataError, match="--subset 81 is more than the 80 training images of .*: give at most 80, or "
                                        "leave --subset out"):
        data.rows(subset=81)


def test_the_items_of_a_run_are_the_paths_of_its_rows_made_once_for_every_run_on_the_folder(tiny_folder):
    data = decoded_folder(tiny_folder)
    train, test = data.rows(subset=10)
    rows = [*train.tolist(), *test.tolist()]
    items = data.paths(rows)
    assert items == [tiny_folder / data.names[row] for row in rows] and set(data.made_paths) == set(rows)
    again = data.paths(rows[:3])  # the next run of a group
    assert all(path is made for path, made in zip(again, items))


def test_a_subset_smaller_than_the_classes_says_it_trains_on_some_of_them(tiny_folder, capsys):
    data = decoded_folder(tiny_folder)
    capsys.readouterr()  # the decoding line
    assert len(data.rows(subset=5)[0]) == 5
    assert capsys.readouterr().err == ("warning: --subset 5 trains on 5 of the 10 classes, one image each, and tests "
                                       "on all of them: give --subset 10 or more to train on every class\n")
    data.rows(subset=10)
    assert capsys.readouterr().err == ""


def test_class_folders_that_differ_only_in_case_are_refused(tmp_path):
    folder = write_folder(tmp_path / "cifar10", n_train=1, n_test=1, classes=["Cat", "cat", "dog"])
    with pytest.raises(DataError, match="has class folders 'Cat' and 'cat', whose names differ only in case"):
        decoded_folder(folder)


def no_space_while_saving(tmp_path, monkeypatch, code=errno.ENOSPC):
    """np.savez writes half the cache file, then finds the disk full (or whatever `code` says)."""
    def savez(file, **arrays):
        file.write(b"PK half a cache file")
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(decoded.np, "savez", savez)


def test_a_full_disk_leaves_no_half_cache_file_and_the_run_goes_on(tiny_folder, isolated_cache, monkeypatch, capsys):
    no_space_while_saving(tiny_folder, monkeypatch)
    data = decoded_folder(tiny_folder)
    assert (data.images[data.labels == 2] == class_image(2)).all()
    assert capsys.readouterr().err.splitlines() == [
        f"warning: the decoded images are not cached, so the next run decodes them again: the disk holding "
        f"{isolated_cache / 'decoded'} is full (No space left on device): free space on it, or set CIFAR10_CACHE to a "
        "folder on a disk with room (CIFAR-10 takes about 0.5 GB there)"]
    assert cached_files(isolated_cache) == []


def test_a_read_only_cache_costs_a_decode_per_run_with_a_warning(tiny_folder, isolated_cache, monkeypatch, capsys):
    real_mkdir = os.mkdir

    def read_only(path, *args, **kwargs):
        if str(path).startswith(str(isolated_cache)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", read_only)
    assert decoded_folder(tiny_folder).readable.all()
    warning, = capsys.readouterr().err.splitlines()
    assert warning.endswith(f"cannot write the cache folder {isolated_cache / 'decoded'} (Read-only file system): set "
                            "CIFAR10_CACHE to a folder you can write to")


@pytest.mark.parametrize("processes", [1, 3])
def test_sigterm_while_decoding_caches_nothing_and_says_so(tiny_folder, isolated_cache, monkeypatch, processes):
    """The images are read here, or by 3 forked readers (SIGTERM then reaches this process while it
    waits for them): the one line says what was kept, nothing half-written is left, nor a reader."""
    monkeypatch.setattr(images, "CHUNK", 10 if processes > 1 else 500)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(processes)), raising=False)
    calls, real_read, parent = [], images.read_rgb32, os.getpid()

    def sigterm_at_the_fifth(path):
        calls.append(path)
        if len(calls) == 5:
            os.kill(parent, signal.SIGTERM)  # as a job scheduler sends it
            time.sleep(10)
        return real_read(path)

    monkeypatch.setattr(images, "read_rgb32", sigterm_at_the_fifth)
    unhandled = signal.signal(signal.SIGTERM, lambda *args: pytest.fail("SIGTERM reached no handler of the decode's"))
    try:
        with pytest.raises(SetUpInterrupted, match=f"interrupted while decoding the images of {tiny_folder}: they stay "
                                                   "as they are, and nothing decoded is cached yet; run the same "
                                                   "command again to decode them"):
            decoded_folder(tiny_folder)
    finally:
        signal.signal(signal.SIGTERM, unhandled)
    assert cached_files(isolated_cache) == [] and multiprocessing.active_children() == []
    monkeypatch.setattr(images, "read_rgb32", real_read)
    assert decoded_folder(tiny_folder).readable.all() and len(cached_files(isolated_cache)) == 1


def test_sigterm_taken_by_another_thread_ends_the_decode_at_once(tiny_folder, isolated_cache, monkeypatch):
    """A signal sent to the process may be taken by any of its threads (torch starts some), and
    Python runs its handler in the main thread only: the decode wakes to run it rather than wait
    for its readers (here, 30 s)."""
    monkeypatch.setattr(images, "CHUNK", 10)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    calls, real_read, parent = [], images.read_rgb32, os.getpid()

    def sigterm_at_the_fifth(path):
        calls.append(path)
        if len(calls) == 5:
            os.kill(parent, signal.SIGTERM)
            time.sleep(30)
        return real_read(path)

    monkeypatch.setattr(images, "read_rgb32", sigterm_at_the_fifth)
    other_thread = threading.Thread(target=threading.Event().wait, args=(40,), daemon=True)
    other_thread.start()  # before the main thread blocks SIGTERM: only this thread can take it
    unhandled = signal.signal(signal.SIGTERM, lambda *args: pytest.fail("SIGTERM reached no handler of the decode's"))
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    started = time.monotonic()
    try:
        with pytest.raises(SetUpInterrupted):
            decoded_folder(tiny_folder)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        signal.signal(signal.SIGTERM, unhandled)
    assert time.monotonic() - started < 10
    assert cached_files(isolated_cache) == [] and multiprocessing.active_children() == []
