"""Failures no check before a run can foresee, and bad input outside the table."""
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

import compare
import predict
from cifar10_fast.core import files, settings
from cifar10_fast.core.errors import DataError, unexpected_line
from cifar10_fast.core.lifecycle import resume_command
from cifar10_fast.experiments import comparison
from tests.bad_input.makers_data import data
from tests.bad_input.makers_tools import index_saying, resume_after_the_cache_was_cleaned
from tests.bad_input.test_table import ONE_EPOCH, REFUSE, REPAIR, run_cli
from tests.conftest import GIVEN_LRS, REPO, one_line_error, write_folder, write_tgz
from train_fastai import main


def test_sync_debug_with_fp16_is_refused_where_a_gpu_may_be(tmp_path, tiny_folder, monkeypatch, capsys):
    """(Without one, fp16 itself is refused first.)"""
    monkeypatch.setattr(settings, "no_cuda_here", lambda: False)
    run_cli("train", [*data(tiny_folder), "--precision", "fp16", "--sync-debug"], tmp_path, REFUSE)
    assert "fp16's gradient scaler reads the GPU at every step" in capsys.readouterr().err


def test_a_damaged_index_is_refused_before_a_run_folder_exists(tmp_path, tiny_folder):
    """Found at the end, it cost the whole run's index row (and the last line of the run)."""
    argv = index_saying("run;seed\nr1;0\n")(tmp_path, tiny_folder, None)
    run_cli("train", argv, tmp_path, REFUSE)
    assert [path.name for path in (tmp_path / "runs").iterdir()] == ["index.csv"]


def test_debug_shows_the_traceback(tmp_path):
    (tmp_path / "empty").mkdir()  # a missing --data is a flag's error, refused before torch loads
    with pytest.raises(DataError, match="neither train/ and test/"):
        main(["--data", str(tmp_path / "empty"), "--debug"])
    with pytest.raises(predict.PredictError, match="is not a folder"):
        predict.main(["--run", str(tmp_path / "nope"), str(tmp_path), "--debug"])
    with pytest.raises(comparison.CompareError, match="is not a folder"):
        compare.main([str(tmp_path / "nope"), "--debug"])


# Issue 9, train side: failures no check before the run can foresee -------------------------

def train_until(monkeypatch, name, failure, tmp_path, tiny_folder, *debug):
    """A run whose step `name` ("fit", or "outputs.write_export": as it is called) raises `failure` instead."""
    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr(f"train_fastai.{name}" if name == "fit" else f"cifar10_fast.training.{name}", fail)
    main([*debug, "--data", str(tiny_folder), "--out", str(tmp_path / "runs"), "--width", "8", "--bs", "16",
          *GIVEN_LRS, "--epochs", "1"])


def test_out_of_memory_in_the_fit_names_width_and_bs(tmp_path, tiny_folder, monkeypatch, capsys):
    with pytest.raises(SystemExit) as e:
        train_until(monkeypatch, "fit", torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                    tmp_path, tiny_folder)
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == ("error: out of memory for CustomResNet --width 8 in "
                                                                "batches of --bs 16: lower --width (64 is the recipe) "
                                                                "or --bs")


def test_a_file_system_failure_midway_is_one_line_and_keeps_what_the_run_finished(tmp_path, tiny_folder, monkeypatch,
                                                                                   capsys):
    """A folder made read-only after the weights were written: the run says so in one line, with
    how to resume it once that is mended, and keeps its summary and weights; --debug shows where
    it happened."""
    denied = PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path / "runs" / "x" / "export.pkl"))
    with pytest.raises(SystemExit) as e:
        train_until(monkeypatch, "outputs.write_export", denied, tmp_path, tiny_folder)
    assert e.value.code == 2
    err = capsys.readouterr().err
    run_dir, = (tmp_path / "runs").iterdir()
    assert "Traceback" not in err and err.strip().splitlines()[-1] == (
        f"error: {denied.filename}: Permission denied: fix its permissions, or choose a folder you can write to; then "
        f"resume the run, which is saved: {resume_command(run_dir)} (rerun with --debug for the traceback)")
    for name in ("config.json", "history.csv", "curves.png", "summary.json", "model.safetensors"):
        assert (run_dir / name).is_file(), name
    with pytest.raises(PermissionError):
        train_until(monkeypatch, "outputs.write_export", denied, tmp_path, tiny_folder, "--debug")


# Issue 17, class 2: the machine's failures name the path and the fix -------------------------

def test_a_full_disk_while_the_weights_are_written_is_one_line_naming_them_and_leaves_no_part(tmp_path, tiny_folder,
                                                                                            monkeypatch, capsys):
    """safetensors' own error (not an OSError) on a full drive: what it says, as it says it."""
    def full_disk(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("cifar10_fast.training.fit.save_file", full_disk)
    with pytest.raises(SystemExit) as e:
        main(["--data", str(tiny_folder), "--out", str(tmp_path / "runs"), "--width", "8", "--bs", "16", *GIVEN_LRS,
              "--epochs", "1"])
    err = capsys.readouterr().err
    run_dir, = (tmp_path / "runs").iterdir()
    assert e.value.code == 2 and "Traceback" not in err and err.strip().splitlines()[-1] == (
        f"error: {run_dir / 'model.safetensors'}: No space left on device: free disk space on its drive (rerun with "
        "--debug for the traceback)")
    assert not [path.name for path in run_dir.iterdir() if "tmp" in path.name]


def test_a_programming_error_keeps_its_traceback(tmp_path, tiny_folder, monkeypatch):
    with pytest.raises(KeyError):
        train_until(monkeypatch, "outputs.write_export", KeyError("a bug of ours"), tmp_path, tiny_folder)


def test_text_in_another_encoding_is_one_line_naming_it():
    error = UnicodeDecodeError("utf-8", b"\xffcat.png", 0, 1, "invalid start byte")
    assert unexpected_line(error) == ("b'\\xffcat.png': invalid start byte: use UTF-8 names and files (rerun with "
                                      "--debug for the traceback)")


# Issue 17, data side: interruptions and the machine's failures while the data is set up ----

def test_a_sweep_refused_for_its_subset_is_refused_before_any_folder(tmp_path, tiny_folder, capsys):
    run_cli("train", [*data(tiny_folder), *ONE_EPOCH, "--sweep", "subset=40,81"], tmp_path, REFUSE)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_resume_after_the_cache_was_cleaned_names_the_data_it_was_given(tmp_path, tiny_folder, monkeypatch,
                                                                           capsys):
    """...and never takes CIFAR10_DATA's instead: that is a new run's default."""
    argv = resume_after_the_cache_was_cleaned(tmp_path, tiny_folder, None)
    monkeypatch.setenv("CIFAR10_DATA", str(tiny_folder))
    run_cli("train", argv, tmp_path, REFUSE)
    run_dir = argv[-1]
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {run_dir} was run on {tmp_path / 'x.tgz'}, which is not there any more (nor the folder it was "
        "unpacked into): give --data with a copy of it to resume the run (see --help)"]


def test_sigterm_while_unpacking_is_one_line_saying_what_was_kept(tmp_path, tiny_folder, isolated_cache, monkeypatch,
                                                                  capsys):
    from cifar10_fast.data import archives
    archive = write_tgz(tiny_folder, tmp_path / "x.tgz", "cifar10")

    def sigterm(*args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)

    monkeypatch.setattr(archives, "extract_with_tar", sigterm)
    monkeypatch.setattr(archives, "extract_with_tarfile", sigterm)
    unhandled = signal.signal(signal.SIGTERM, lambda *args: pytest.fail("SIGTERM reached no handler of unpack's"))
    try:
        with pytest.raises(SystemExit) as e:
            main([*data(archive), "--out", str(tmp_path / "runs")])
    finally:
        signal.signal(signal.SIGTERM, unhandled)
    assert e.value.code == 130 and capsys.readouterr().err.splitlines() == [
        f"interrupted while unpacking {archive}: nothing of it is kept; run the same command again to start it over"]
    assert [p.name for p in (isolated_cache / "unpacked").iterdir()] == [] and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("code,line", [
    (errno.EROFS, "cannot write the cache folder {} (Read-only file system): set CIFAR10_CACHE to a folder you can "
                  "write to"),
    (errno.ENOSPC, "the disk holding {} is full (No space left on device): free space on it, or set CIFAR10_CACHE to "
                   "a folder on a disk with room (CIFAR-10 takes about 0.5 GB there)")])
def test_a_cache_that_cannot_be_written_is_one_line_naming_it(tmp_path, tiny_folder, isolated_cache, monkeypatch,
                                                              capsys, code, line):
    """Unpacking needs the cache: a read-only one (a read-only home) or a full disk stops the run."""
    archive = write_tgz(tiny_folder, tmp_path / "x.tgz", "cifar10")
    real_mkdir = os.mkdir

    def mkdir(path, *args, **kwargs):
        if str(path).startswith(str(isolated_cache)):
            raise OSError(code, os.strerror(code), str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    with pytest.raises(SystemExit) as e:
        main([*data(archive), "--out", str(tmp_path / "runs")])
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines() == ["error: " + line.format(isolated_cache / "unpacked")]
# Issue 17, class 5: output a person can read ----------------------------------------------

CJK_CLASSES = ["飛行機", "自動車", "鳥", "猫", "鹿", "犬", "蛙", "馬", "船", "トラック"]


def test_class_names_in_cjk_give_one_warning_line_not_one_per_character(tmp_path, monkeypatch, capsys):
    """Without a font that has them, matplotlib warned once per character of the confusion matrix
    and the misclassified images: 12 lines and more."""
    monkeypatch.setattr(files, "shown_as_boxes", set())
    folder = write_folder(tmp_path / "cjk", classes=CJK_CLASSES)
    run_cli("train", ["--data", str(folder), *ONE_EPOCH], tmp_path, REPAIR)
    err = capsys.readouterr().err
    assert "Glyph" not in err
    if not any(all(c in charmap for c in "".join(CJK_CLASSES)) for _, charmap in files.installed_charmaps()):
        warning, = (line for line in err.splitlines() if "as boxes" in line)
        assert warning.startswith("warning: the figures draw 17 characters of their labels as boxes")


def test_csv_into_a_folder_that_is_not_writable_is_refused_before_any_work(tmp_path, run_dir, images, monkeypatch,
                                                                           capsys):
    """It printed every prediction, then failed naming its temporary file (.x.csv.tmp)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.access(locked, os.W_OK):  # root writes anyway: see the folder as a user would
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: real_access(path, mode) and Path(path) != locked)
    try:
        line = one_line_error(predict.main, ["--run", str(run_dir), str(images), "--csv", str(locked / "x.csv")],
                              capsys)
    finally:
        locked.chmod(0o755)
    assert line == f"error: {locked} is not writable for you: give --csv a file in a folder you can write to"
    assert not any(locked.iterdir())



def test_a_terminal_that_cannot_show_a_name_shows_it_escaped_and_the_run_goes_on(tmp_path):
    """In a locale whose encoding lacks the class names' letters, the run ended with 'use UTF-8 names'
    (for names that were UTF-8) and left an empty run folder."""
    folder = write_folder(tmp_path / "cjk", classes=CJK_CLASSES, n_train=1, n_test=1)
    done = subprocess.run([sys.executable, str(REPO / "train_fastai.py"), "--data", str(folder), "--out",
                           str(tmp_path / "runs"), "--width", "4", "--bs", "10", *ONE_EPOCH, "--subset", "10",
                           "--name", "猫"],
                          cwd=tmp_path, capture_output=True, env={**os.environ, "PYTHONIOENCODING": "ascii"})
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    run_dir, = (tmp_path / "runs").glob("2*")
    assert (run_dir / "report.html").is_file()
