"""files.atomic: every file of a run is written under a temporary name, renamed into place, and
gets the mode any new file gets; a write that fails names the file and leaves no part of it;
files.save_figure: labels in any script."""
import errno
import os
import stat
import warnings
from pathlib import Path
from types import SimpleNamespace

import matplotlib
import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from cifar10_fast.core import files
from cifar10_fast.core.files import atomic
from cifar10_fast.core.run_folder import TENSORBOARD_EVENTS
from tests.conftest import GIVEN_LRS, train


def test_every_output_file_reaches_its_name_by_a_rename(tmp_path, tiny_folder, monkeypatch):
    renamed = []
    real_replace = os.replace
    monkeypatch.setattr(files.os, "replace", lambda src, dst: renamed.append(dst.name) or real_replace(src, dst))
    run_dir = train(tiny_folder, tmp_path / "runs", *GIVEN_LRS, "--epochs", 1, "--name", "a")
    written = {p.name for p in run_dir.iterdir()}
    # history.csv is fastai's CSVLogger's: a line is flushed and synced as each epoch ends; TensorBoard's
    # event file is a log too, which TensorBoard reads as it grows.
    logs = {"history.csv", *(p.name for p in run_dir.glob(TENSORBOARD_EVENTS))}
    assert len(logs) == 2 and written - logs <= set(renamed)
    assert {"summary.json", "model.safetensors", "classes.json", "export.pkl", "curves.png"} <= written
    assert not [name for name in written if name.endswith(".tmp")]


def test_a_written_file_gets_the_mode_open_gives_even_from_a_writer_that_makes_it_0600(tmp_path):
    with atomic(tmp_path / "model.safetensors") as tmp:
        save_file({"w": torch.zeros(2)}, tmp)  # safetensors creates its files 0600
    (tmp_path / "plain.txt").write_text("")  # open() gives 0666 less the umask
    modes = {path.name: stat.S_IMODE(os.stat(path).st_mode) for path in tmp_path.iterdir()}
    assert modes["model.safetensors"] == modes["plain.txt"]


# Issue 17, class 2: a write the machine refuses names the file, and leaves nothing behind ----------

def failed_write(path, error):
    """What atomic(`path`) raises when its write raises `error`, after checking nothing is left."""
    with pytest.raises(OSError) as raised:
        with atomic(path) as tmp:
            tmp.write_bytes(b"half of it")
            raise error
    assert list(path.parent.iterdir()) == []
    return raised.value


def test_a_write_that_names_no_file_names_the_one_it_was_writing(tmp_path):
    error = failed_write(tmp_path / "summary.json", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    assert (error.errno, error.filename) == (errno.ENOSPC, str(tmp_path / "summary.json"))


def test_safetensors_error_on_a_full_disk_is_the_oserror_it_holds(tmp_path):
    error = failed_write(tmp_path / "model.safetensors",
                         SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"))
    assert (error.errno, error.strerror, error.filename) == (errno.ENOSPC, os.strerror(errno.ENOSPC),
                                                             str(tmp_path / "model.safetensors"))


def test_torchs_writer_failing_is_a_full_disk_on_a_full_drive_and_an_io_error_elsewhere(tmp_path, monkeypatch):
    """torch.save to a path (fastai's export) fails with a RuntimeError that has lost the errno."""
    cut_short = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    error = failed_write(tmp_path / "export.pkl", cut_short)
    assert (error.errno, error.filename, error.__cause__) == (errno.EIO, str(tmp_path / "export.pkl"), cut_short)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda folder: SimpleNamespace(free=4096))
    assert failed_write(tmp_path / "export.pkl", cut_short).errno == errno.ENOSPC
    with pytest.raises(RuntimeError, match="a bug"):  # any other RuntimeError is ours, and keeps its traceback
        with atomic(tmp_path / "export.pkl"):
            raise RuntimeError("a bug")


def test_an_open_refused_names_the_file_not_its_temporary_name(tmp_path, monkeypatch):
    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path / ".classes.json.tmp"))

    monkeypatch.setattr(Path, "write_text", refused)
    with pytest.raises(PermissionError) as raised:
        files.write_json(tmp_path / "classes.json", {})
    assert raised.value.filename == str(tmp_path / "classes.json")


# Issue 17, class 5: figures whose labels are in any script --------------------------------

def figure_titled(title):
    import matplotlib.pyplot as plt
    files.figures_to_files()
    fig, ax = plt.subplots()
    ax.set_title(title)
    return fig


def test_characters_no_font_has_are_one_warning_line_a_process_not_one_a_character(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(files, "shown_as_boxes", set())
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        files.save_figure(figure_titled("猫と犬"), tmp_path / "a.png")
        files.save_figure(figure_titled("犬"), tmp_path / "b.png")  # nothing new to say
    assert [str(warning.message) for warning in shown] == []
    assert capsys.readouterr().err == ("warning: the figures draw 3 characters of their labels as boxes (と犬猫): no "
                                       "installed font has them; install one that does (Noto Sans CJK for Chinese, "
                                       "Japanese or Korean) for readable figures\n")
    assert (tmp_path / "a.png").stat().st_size > 0


def test_a_character_the_default_font_lacks_is_drawn_with_an_installed_font_that_has_it(tmp_path, capsys):
    """matplotlib's own STIX fonts have arrows that DejaVu Sans lacks: the figure takes one of them."""
    with matplotlib.rc_context(), warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        fig = figure_titled("⤸")
        files.save_figure(fig, tmp_path / "arrow.png")
        assert matplotlib.rcParams["font.family"][1:] == fig.axes[0].title.get_fontfamily()[1:]  # later figures too
    family = fig.axes[0].title.get_fontfamily()[-1]
    assert family != "DejaVu Sans" and any(name == family and "⤸" in charmap
                                           for name, charmap in files.installed_charmaps())
    # (A ResourceWarning there would be another test's garbage, collected meanwhile: not the figure's.)
    figure_warnings = [str(warning.message) for warning in shown if not issubclass(warning.category, ResourceWarning)]
    assert figure_warnings == [] and capsys.readouterr().err == ""
