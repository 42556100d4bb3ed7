"""CIFAR-10 from every source it may come from: folders in fastai's layout, archives, the python
version, the environment's default, the download where there is no route to it."""
import time

import pytest

from cifar10_fast.core.errors import DataError
from cifar10_fast.data import sources
from cifar10_fast.data.sources import cifar10_folder
from tests.conftest import CLASSES, check_labels_match_pixels, load, write_folder, write_python_batches, write_tgz

SOURCES = {  # name: (make, training images, test images)
    "png folder": (lambda tmp: write_folder(tmp / "cifar10"), 80, 20),
    "bmp folder": (lambda tmp: write_folder(tmp / "cifar10", suffix=".bmp"), 80, 20),
    "folder wrapping the layout": (lambda tmp: write_folder(tmp / "wrap" / "cifar10").parent, 80, 20),
    "fastai .tgz": (lambda tmp: write_tgz(write_folder(tmp / "cifar10"), tmp / "cifar10.tgz", "cifar10"), 80, 20),
    "python batches folder": (lambda tmp: write_python_batches(tmp / "cifar-10-batches-py"), 50, 20),
    "python .tar.gz": (lambda tmp: write_tgz(write_python_batches(tmp / "cifar-10-batches-py"),
                                             tmp / "cifar-10-python.tar.gz", "cifar-10-batches-py"), 50, 20),
}


@pytest.mark.parametrize("make,n_train,n_test", SOURCES.values(), ids=SOURCES.keys())
def test_every_source_format_gives_labelled_train_and_test_sets(tmp_path, make, n_train, n_test):
    folder, dls, stats = load(make(tmp_path))
    assert list(dls.vocab) == CLASSES
    assert (len(dls.train_ds), len(dls.valid_ds)) == (n_train, n_test)
    check_labels_match_pixels(dls.valid, stats)
    assert sum(len(y) for _, y in dls.valid) == n_test


def test_env_variable_is_the_default_source(tiny_folder, monkeypatch):
    monkeypatch.setenv("CIFAR10_DATA", str(tiny_folder))
    assert cifar10_folder() == tiny_folder


def test_archives_are_unpacked_once(tmp_path, isolated_cache):
    archive = write_tgz(write_folder(tmp_path / "cifar10"), tmp_path / "c.tgz", "cifar10")
    first = cifar10_folder(str(archive))
    assert first.is_relative_to(isolated_cache)
    (first / "marker").write_text("kept")
    assert cifar10_folder(str(archive)) == first and (first / "marker").exists()


def test_no_data_and_no_route_to_the_download_fails_within_seconds(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTAI_HOME", str(tmp_path / "fastai"))
    def hang(*args, **kwargs):  # a host with no route answers nothing: the connection (or name lookup) hangs
        time.sleep(20)
        raise TimeoutError

    monkeypatch.setattr(sources.socket, "create_connection", hang)
    start = time.perf_counter()
    with pytest.raises(DataError, match="cannot be reached: pass --data PATH or set CIFAR10_DATA"):
        cifar10_folder()
    assert time.perf_counter() - start < 10


def test_an_empty_cache_variable_means_the_default_cache_not_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CIFAR10_CACHE", "")
    archive = write_tgz(write_folder(tmp_path / "cifar10"), tmp_path / "c.tgz", "cifar10")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert cifar10_folder(str(archive)).is_relative_to(tmp_path / "home" / ".cache" / "cifar10-fast")
    assert not any((tmp_path / "work").iterdir())
