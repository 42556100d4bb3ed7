"""Several processes, data-parallel, on CPUs (gloo) as on GPUs."""
import json
import subprocess
import sys

import pandas as pd
import pytest

import train_fastai
from tests.conftest import GIVEN_LRS, REPO, TINY, train


def test_two_processes_train_data_parallel_and_one_writes_the_run(tmp_path, tiny_folder):
    """What `accelerate launch --num_processes 2` starts, on CPUs (gloo): torch's launcher."""
    out = tmp_path / "runs"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(REPO / "train_fastai.py"), "--data", str(tiny_folder), "--out", str(out), *TINY,
                           "--epochs", "1"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir, = (p for p in out.iterdir() if p.is_dir())  # one run folder, written by the main process
    assert "data-parallel: 2 processes x 8 = an effective batch of 16" in done.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["effective_bs"] == 16
    assert len(pd.read_csv(run_dir / "history.csv")) == 1
    assert json.loads((run_dir / "config.json").read_text())["lr_source"] == "lr_find.json"  # the main's finder
    assert len(pd.read_csv(run_dir / "lr_schedule.csv")) == 80 // 16  # steps of the effective batch
    assert (run_dir / "model.safetensors").is_file()


def test_a_group_of_runs_is_refused_under_several_processes(tmp_path, tiny_folder, monkeypatch, capsys):
    """Every process would start the group's workers; the user is told to launch the runs one by one."""
    monkeypatch.setattr(train_fastai, "num_distrib", lambda: 2)
    with pytest.raises(SystemExit) as e:
        train(tiny_folder, tmp_path / "runs", *GIVEN_LRS, "--epochs", 1, "--runs", 2, "--name", "group")
    assert e.value.code == 2
    assert capsys.readouterr().err == ("error: --runs, --sweep and --search start their own workers: launch each run "
                                       "with accelerate, or drop accelerate launch for the group\n")
    assert not (tmp_path / "runs").exists()
