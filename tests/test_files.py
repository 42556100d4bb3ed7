"""files.atomic: every file of a run is written under a temporary name, renamed into place, and
gets the mode any new file gets."""
import os
import stat

import torch
from safetensors.torch import save_file

import files
from conftest import GIVEN_LRS, train
from files import atomic


def test_every_output_file_reaches_its_name_by_a_rename(tmp_path, tiny_folder, monkeypatch):
    renamed = []
    real_replace = os.replace
    monkeypatch.setattr(files.os, "replace", lambda src, dst: renamed.append(dst.name) or real_replace(src, dst))
    run_dir = train(tiny_folder, tmp_path / "runs", *GIVEN_LRS, "--epochs", 1, "--name", "a")
    written = {p.name for p in run_dir.iterdir()}
    # history.csv is fastai's CSVLogger's: a line is flushed and synced as each epoch ends.
    assert written - {"history.csv"} <= set(renamed)
    assert {"summary.json", "model.safetensors", "classes.json", "export.pkl", "curves.png"} <= written
    assert not [name for name in written if name.endswith(".tmp")]


def test_a_written_file_gets_the_mode_open_gives_even_from_a_writer_that_makes_it_0600(tmp_path):
    with atomic(tmp_path / "model.safetensors") as tmp:
        save_file({"w": torch.zeros(2)}, tmp)  # safetensors creates its files 0600
    (tmp_path / "plain.txt").write_text("")  # open() gives 0666 less the umask
    modes = {path.name: stat.S_IMODE(os.stat(path).st_mode) for path in tmp_path.iterdir()}
    assert modes["model.safetensors"] == modes["plain.txt"]
