"""Reading image files: many at once, with the machine's cores."""
import multiprocessing
import os
import signal

import numpy as np
import pytest
from PIL import Image

from cifar10_fast.core.errors import BadInput
from cifar10_fast.data import images
from tests.conftest import class_image


def some_images(folder):
    """40 files: flat colours, a grayscale one, a 40x20 one and one that is not an image."""
    folder.mkdir()
    paths = []
    for i in range(40):
        paths.append(str(folder / f"{i:02d}.png"))
        Image.fromarray(class_image(i % 10)).save(paths[-1])
    Image.new("L", (32, 32), 70).save(paths[5])
    Image.new("RGB", (40, 20), (9, 9, 9)).save(paths[17])
    (folder / "33.png").write_bytes(b"not a png")
    return paths


def test_many_files_are_read_by_several_processes_as_one_process_reads_them(tmp_path, monkeypatch):
    paths = some_images(tmp_path / "images")
    alone = images.read_rgb32_all(paths)  # 40 files: one chunk, read here

    readers = tmp_path / "readers"
    readers.mkdir()
    real_read = images.read_rgb32

    def read_and_sign(path):
        (readers / str(os.getpid())).touch()
        return real_read(path)

    monkeypatch.setattr(images, "CHUNK", 3)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)  # 4 cores, even on 1
    monkeypatch.setattr(images, "read_rgb32", read_and_sign)
    shared = images.read_rgb32_all(paths)
    assert len({p.name for p in readers.iterdir()} - {str(os.getpid())}) == 4  # forked readers, this one not
    assert np.array_equal(shared[0], alone[0]) and np.array_equal(shared[1], alone[1]) and shared[2] == alone[2]
    assert not alone[1][33] and (alone[0][33] == 0).all() and alone[2] == ["mode L", "size 40x20"]
    assert (alone[0][5] == 70).all() and (alone[0][12] == class_image(2)).all()


def test_no_files_read_as_no_pixels():
    pixels, readable, repairs = images.read_rgb32_all([])
    assert pixels.shape == (0, 32, 32, 3) and readable.shape == (0,) and repairs == []


def test_a_reader_that_dies_is_said_in_one_line_and_none_is_left(tmp_path, monkeypatch):
    """A reader killed (by the kernel, for memory, say) ends the read with a line that says so,
    not a wait for it without end; the other readers are not left behind."""
    paths = some_images(tmp_path / "images")
    real_read = images.read_rgb32

    def killed_at_the_fifth(path):
        if path == paths[5]:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_read(path)

    monkeypatch.setattr(images, "CHUNK", 10)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(images, "read_rgb32", killed_at_the_fifth)
    with pytest.raises(BadInput, match="^a process reading the images was killed by SIGKILL, perhaps for want of "
                                       "memory: run again, with fewer other programs running$"):
        images.read_rgb32_all(paths)
    assert multiprocessing.active_children() == []
