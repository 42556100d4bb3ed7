"""files.atomic: what it leaves behind."""
import os
import stat

import torch
from safetensors.torch import save_file

from files import atomic


def test_a_written_file_gets_the_mode_open_gives_even_from_a_writer_that_makes_it_0600(tmp_path):
    with atomic(tmp_path / "model.safetensors") as tmp:
        save_file({"w": torch.zeros(2)}, tmp)  # safetensors creates its files 0600
    (tmp_path / "plain.txt").write_text("")  # open() gives 0666 less the umask
    modes = {path.name: stat.S_IMODE(os.stat(path).st_mode) for path in tmp_path.iterdir()}
    assert modes["model.safetensors"] == modes["plain.txt"]
