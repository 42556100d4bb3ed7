import json

import pandas as pd
import torch

from conftest import GIVEN_LRS, history_values, train
from hardware import seed_everything


def test_the_same_seed_gives_the_same_history_on_the_cpu(tmp_path, tiny_folder):
    out = tmp_path / "runs"
    first = train(tiny_folder, out, *GIVEN_LRS, "--epochs", 1, "--seed", 3, "--name", "first")
    try:
        second = train(tiny_folder, out, *GIVEN_LRS, "--epochs", 1, "--seed", 3, "--deterministic", "--name", "second")
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    pd.testing.assert_frame_equal(history_values(first), history_values(second), check_exact=True)
    assert json.loads((second / "config.json").read_text())["deterministic"] is True


def test_cudnn_autotunes_unless_the_run_must_repeat_bitwise():
    try:
        seed_everything(0, deterministic=False)
        assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
        seed_everything(0, deterministic=True)
        assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = torch.backends.cudnn.benchmark = False
