"""A run stopped at any moment keeps what it did and says so in one line; one process at a time
trains a run folder.

Issue 17, class 1: Ctrl-C or SIGTERM in the range test, after the fit (while the outputs are
written), twice in a row; a run killed outright; two resumes of one run; a resume command to paste."""
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from fastai.callback.core import Callback

import train_fastai
from cifar10_fast.core import lifecycle
from cifar10_fast.core.config import FINDER_ITERS_MIN
from cifar10_fast.core.errors import command_to_retype, one_line_errors
from cifar10_fast.core.settings import parse_args
from cifar10_fast.data.cache import interruptible
from cifar10_fast.training import fit as checkpoint
from cifar10_fast.training import outputs
from tests.conftest import GIVEN_LRS, REPO, TINY, ctrl_c_while_torch_loads, history_values, train
from train_fastai import main


class SignalAt(Callback):
    """Sends this process `signum` at the start of its `batch`-th training batch (counting from 1,
    the LR range test's included), once, as a user or a job scheduler would."""

    def __init__(self, signum, batch):
        self.signum, self.batch, self.seen = signum, batch, 0

    def before_batch(self):
        if self.training:
            self.seen += 1
            if self.seen == self.batch:
                os.kill(os.getpid(), self.signum)


class Killed(BaseException):
    """What SIGKILL does to a run, in-process: it ends where it is, and nothing of ours runs after."""


class KillAt(Callback):
    def __init__(self, epoch):
        self.epoch_to_die = epoch

    def before_epoch(self):
        if self.epoch == self.epoch_to_die:
            raise Killed


class CountTrainingBatches(Callback):
    def __init__(self):
        self.count = 0

    def after_batch(self):
        self.count += self.training


def with_callback(monkeypatch, callback):
    """Every learner this test makes gets `callback`."""
    real_make_learner = train_fastai.make_learner
    monkeypatch.setattr(train_fastai, "make_learner", lambda *a: real_make_learner(*a).add_cb(callback))
    return callback


def stopped(argv, capsys, status=130):
    """main(argv) ends the process with `status`; its last line on stderr."""
    with pytest.raises(SystemExit) as e:
        main([*TINY, *map(str, argv)])
    err = capsys.readouterr().err
    assert e.value.code == status and "Traceback" not in err, err
    return err.strip().splitlines()[-1]


@pytest.fixture
def sigterm_fails_the_test():
    """A SIGTERM that reaches no handler of ours fails the test instead of killing pytest."""
    def unhandled(signum, frame):
        raise AssertionError("SIGTERM reached no handler of the run")

    previous = signal.signal(signal.SIGTERM, unhandled)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_ctrl_c_in_the_range_test_removes_its_parked_weights_and_says_there_is_nothing_to_resume(
        tmp_path, tiny_folder, monkeypatch, capsys):
    with_callback(monkeypatch, SignalAt(signal.SIGINT, batch=3))
    line = stopped(["--data", tiny_folder, "--out", tmp_path / "runs", "--finder-iters", FINDER_ITERS_MIN,
                    "--epochs", 1], capsys)
    run_dir, = (tmp_path / "runs").iterdir()
    assert line == f"interrupted before its first epoch finished: nothing to resume in {run_dir}; start the run again"
    assert sorted(path.name for path in run_dir.iterdir()) == ["config.json"]  # no models/tmp*/_tmp.pth, no .lock


def test_sigterm_after_the_fit_keeps_it_and_resume_writes_the_outputs_without_training(
        tmp_path, tiny_folder, monkeypatch, capsys, sigterm_fails_the_test):
    """The fit stops early at --target-acc, and a SIGTERM comes while its outputs are written: the
    weights and what the summary needs are kept; --resume writes every output, training nothing."""
    real_interpretation = outputs.write_interpretation

    def sigterm_then_interpretation(*args):
        os.kill(os.getpid(), signal.SIGTERM)
        real_interpretation(*args)

    monkeypatch.setattr(outputs, "write_interpretation", sigterm_then_interpretation)
    out = tmp_path / "runs"
    line = stopped(["--data", tiny_folder, "--out", out, *GIVEN_LRS, "--epochs", 2, "--tta", "--target-acc", 0.01,
                    "--name", "cut"], capsys)
    run_dir, = out.iterdir()
    assert line == (f"interrupted after the fit: its 1 epoch and weights are saved in {run_dir}, not yet all its "
                    f"outputs. Resume with: {command_to_retype(REPO / 'train_fastai.py')} --resume {run_dir}")
    progress = json.loads((run_dir / "checkpoint.json").read_text())
    assert progress["fit_done"] and progress["time_to_accuracy"]["stopped_early"]
    assert (run_dir / "model.safetensors").is_file() and not (run_dir / "checkpoint.pth").exists()
    assert not (run_dir / "summary.json").exists() and not (out / "index.csv").exists()
    history = history_values(run_dir)

    monkeypatch.setattr(outputs, "write_interpretation", real_interpretation)
    trained = with_callback(monkeypatch, CountTrainingBatches())
    main(["--resume", str(run_dir)])
    assert trained.count == 0
    assert "the fit was done (1 epochs): writing its outputs, training nothing" in capsys.readouterr().out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stopped_early"] and summary["epochs"] == 1 and summary["first_epoch_1"] == 1
    assert summary["fit_seconds"] == pytest.approx(progress["fit_seconds"], abs=1e-3) and "tta_accuracy" in summary
    pd.testing.assert_frame_equal(history_values(run_dir), history)
    assert len(pd.read_csv(run_dir / "lr_schedule.csv")) == len(progress["lrs"]) > 0
    for name in ("confusion_matrix.png", "misclassified.png", "classes.json", "export.pkl", "report.html"):
        assert (run_dir / name).is_file(), name
    assert list(pd.read_csv(out / "index.csv").run) == [run_dir.name]
    assert not (run_dir / "checkpoint.json").exists() and not (run_dir / lifecycle.LOCK).exists()


def test_a_second_ctrl_c_while_the_checkpoint_is_written_neither_cuts_it_nor_says_nothing_to_resume(
        tmp_path, tiny_folder, monkeypatch, capsys):
    """...and the command it prints, for a folder whose path has a space, pastes into a shell whole."""
    real_save = checkpoint.save_checkpoint

    def ctrl_c_again_then_save(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        real_save(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_checkpoint", ctrl_c_again_then_save)
    with_callback(monkeypatch, SignalAt(signal.SIGINT, batch=7))  # the 2nd batch of epoch 2 (5 batches an epoch)
    line = stopped(["--data", tiny_folder, "--out", tmp_path / "my runs", *GIVEN_LRS, "--epochs", 2], capsys)
    run_dir, = (tmp_path / "my runs").iterdir()
    assert line.startswith(f"interrupted; epoch 1 is saved in {run_dir}. Resume with: ")
    assert shlex.split(line.split("Resume with: ")[1])[-2:] == ["--resume", str(run_dir)]
    assert json.loads((run_dir / "checkpoint.json").read_text())["epochs_done"] == 1
    assert (run_dir / "checkpoint.pth").is_file()
    assert files_open_in(run_dir) == []  # history.csv too, which fastai closes only in after_fit


def files_open_in(folder):
    """The files under `folder` this process holds open."""
    paths = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:  # the listing's own descriptor, closed by now
            pass
    return [path for path in paths if path.startswith(f"{folder}/")]


def test_a_run_killed_outright_resumes_from_its_last_periodic_checkpoint(tmp_path, tiny_folder, monkeypatch, capsys):
    """...on the data it was run on, whatever CIFAR10_DATA now says (a new run's default)."""
    with pytest.MonkeyPatch.context() as killing:
        killing.setattr(checkpoint, "CHECKPOINT_EVERY_S", 0)  # one at every epoch's end but the last
        with_callback(killing, KillAt(epoch=1))
        with pytest.raises(Killed):
            train(tiny_folder, tmp_path / "runs", *GIVEN_LRS, "--epochs", 2, "--name", "killed")
    run_dir, = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "checkpoint.json").read_text())["epochs_done"] == 1
    monkeypatch.setenv("CIFAR10_DATA", str(tmp_path / "other-data.tgz"))
    main(["--resume", str(run_dir)])
    assert len(history_values(run_dir)) == 2 and (run_dir / "report.html").is_file()
    assert not (run_dir / "checkpoint.pth").exists()


def interrupted_run(tmp_path):
    """The folder of a run interrupted after its first epoch of two, as far as its settings go."""
    run_dir = tmp_path / "runs" / "interrupted"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"epochs": 2, "bs": 16, "width": 8}))
    (run_dir / "checkpoint.json").write_text(json.dumps({"epochs_done": 1, "history": [["0", "2.3", "2.2", "0.1", "0"]],
                                                         "lrs": [1e-4], "moms": [0.95], "fit_seconds": 1.5}))
    return run_dir


def ctrl_c_while_decoding(*args):
    with interruptible("decoding the images: nothing decoded is cached yet; run the same command again"):
        os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_while_a_run_sets_up_its_data_says_how_far_it_got(tmp_path, tiny_folder, monkeypatch, capsys):
    monkeypatch.setattr(train_fastai, "cifar10_data", ctrl_c_while_decoding)
    assert stopped(["--data", tiny_folder, "--out", tmp_path / "runs"], capsys) == (
        "interrupted while decoding the images: nothing decoded is cached yet; run the same command again")


def test_ctrl_c_while_a_resumed_run_sets_up_its_data_says_its_checkpoint_is_there(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_fastai, "cifar10_data", ctrl_c_while_decoding)
    run_dir = interrupted_run(tmp_path)
    assert stopped(["--resume", run_dir], capsys) == (f"interrupted; epoch 1 is saved in {run_dir}. Resume with: "
                                                      f"{lifecycle.resume_command(run_dir)}")


def test_ctrl_c_while_a_resume_loads_torch_says_its_checkpoint_is_there(tmp_path):
    run_dir = interrupted_run(tmp_path)
    status, err = ctrl_c_while_torch_loads(["--resume", str(run_dir)], tmp_path)
    assert status == 130 and err.startswith(f"interrupted; epoch 1 is saved in {run_dir}. Resume with: ")
    assert shlex.split(err)[-2:] == ["--resume", str(run_dir)]


def test_two_resumes_of_one_run_cannot_both_train_it(tmp_path, capsys):
    """A process that holds the run folder (another --resume of it, still running): a resume is
    refused at once, naming it; once it has died (SIGKILL), its lock is gone with it."""
    run_dir = interrupted_run(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from cifar10_fast.core import lifecycle; from pathlib import Path; "
         "lifecycle.hold(Path(sys.argv[1])); print('held', flush=True); time.sleep(120)", str(run_dir)],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(SystemExit) as e:
            parse_args(["--resume", str(run_dir)])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith(f"error: {run_dir} is in use by process {holder.pid} on "), err
        with pytest.raises(lifecycle.RunFolderInUse, match=f"process {holder.pid} on"):
            lifecycle.hold(run_dir)  # where the run takes the folder for good, after its data set-up
    finally:
        holder.kill()
        holder.wait()
    assert (run_dir / lifecycle.LOCK).exists()  # a killed holder leaves its file, not its lock
    assert parse_args(["--resume", str(run_dir)]).resume == str(run_dir)
    assert not (run_dir / lifecycle.LOCK).exists()


def test_a_failure_of_the_machine_in_a_run_that_is_saved_says_how_to_resume_it(tmp_path, capsys):
    (tmp_path / "checkpoint.json").write_text(json.dumps({"epochs_done": 2, "fit_done": True}))
    with pytest.raises(SystemExit):
        with one_line_errors(debug=False), lifecycle.stops_cleanly():
            lifecycle.hold(tmp_path)
            raise OSError(28, "No space left on device", str(tmp_path / "export.pkl"))
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'export.pkl'}: No space left on device: free disk space on its drive; then resume the "
        f"run, which is saved: {lifecycle.resume_command(tmp_path)} (rerun with --debug for the traceback)\n")
    assert lifecycle.Held.run_dir is None and not (tmp_path / lifecycle.LOCK).exists()


def test_a_run_and_its_data_set_up_stop_on_a_signal_ignored_before_and_put_every_handler_back():
    """A job started in the background has its Ctrl-C ignored: `kill -INT` still stops it cleanly."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.getsignal(signal.SIGTERM)
    try:
        with lifecycle.stopping_on_signals():
            assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == (lifecycle.stop,
                                                                                         lifecycle.stop)
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == (signal.SIG_IGN, previous[1])
    finally:
        signal.signal(signal.SIGINT, previous[0])


# Issue 24, class 1: a run outlives its terminal ----------------------------------------------

def run_in_the_background(tmp_path, tiny_folder):
    """train_fastai.py as a user starts it in a terminal: its output read by a pipe."""
    return subprocess.Popen([sys.executable, str(REPO / "train_fastai.py"), "--data", str(tiny_folder), "--out",
                             str(tmp_path / "runs"), *TINY, *GIVEN_LRS, "--epochs", "8"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def the_run_folder(tmp_path):
    run_dir, = (tmp_path / "runs").glob("2*")
    return run_dir


def assert_whole(run_dir):
    assert (run_dir / "report.html").is_file() and len(pd.read_csv(run_dir / "history.csv")) == 8
    assert not (run_dir / lifecycle.LOCK).exists() and not (run_dir / "checkpoint.json").exists()


def test_a_closed_terminal_leaves_the_run_training_to_its_end(tmp_path, tiny_folder):
    """SIGHUP, as closing a terminal or losing an ssh session sends it, ended a run at once: no
    checkpoint, its finished epochs lost, a .lock left."""
    process = run_in_the_background(tmp_path, tiny_folder)
    while not (tmp_path / "runs").is_dir() or not list((tmp_path / "runs").glob("2*/history.csv")):
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGHUP)
    process.stdout.close()
    process.stderr.close()
    assert process.wait(timeout=120) == 0
    assert_whole(the_run_folder(tmp_path))


def test_a_closed_pipe_leaves_the_run_training_to_its_end(tmp_path, tiny_folder):
    """`train_fastai.py ... | head -3`: the reader gone, a print failed (a broken pipe), taken for the
    history's write, and the run ended without its checkpoint."""
    process = run_in_the_background(tmp_path, tiny_folder)
    lines = [process.stdout.readline() for _ in range(3)]
    process.stdout.close()
    assert process.wait(timeout=120) == 0, process.stderr.read()
    assert lines[-1] and "Broken pipe" not in process.stderr.read()
    assert_whole(the_run_folder(tmp_path))


def test_a_run_folder_let_go_of_empty_is_removed_and_one_with_files_kept(tmp_path):
    """A run that failed right after making its folder left an empty one behind."""
    empty, kept = tmp_path / "empty", tmp_path / "kept"
    for folder in (empty, kept):
        folder.mkdir()
        lifecycle.hold(folder)
        if folder == kept:
            (folder / "config.json").write_text("{}")
        lifecycle.let_go()
    assert not empty.exists() and sorted(p.name for p in kept.iterdir()) == ["config.json"]


# hostile input, round 5: a run outlives its terminal -------------------------------------------

def test_a_closed_terminal_leaves_a_log_file_written_to_the_end(tmp_path):
    """`train_fastai.py ... > train.log 2>&1 &`, then the ssh session closed: the hangup pointed the
    log file at /dev/null, and the log stopped there while the run went on."""
    log = tmp_path / "train.log"
    script = ("import os, signal, sys\n"
              "from cifar10_fast.core.lifecycle import outliving_the_terminal\n"
              "with outliving_the_terminal():\n"
              "    print('before', flush=True)\n"
              "    os.kill(os.getpid(), signal.SIGHUP)\n"
              "    print('after', flush=True)\n"
              "    print('on stderr', file=sys.stderr, flush=True)\n")
    with log.open("w") as written:
        subprocess.run([sys.executable, "-c", script], cwd=REPO, stdout=written, stderr=subprocess.STDOUT,
                       check=True, timeout=60)
    assert log.read_text().split() == ["before", "after", "on", "stderr"]
