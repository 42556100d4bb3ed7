"""Every file of a run is written under a temporary name and renamed into place."""
import os

import files
from conftest import GIVEN_LRS, train


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
