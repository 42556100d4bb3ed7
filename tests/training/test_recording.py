"""The loop's record and display: no host read of a tensor in the training batches, readable logs."""
import re
import sys

import torch
from fastai.vision.all import Callback, Recorder

import train_fastai
from cifar10_fast.core.config import member
from cifar10_fast.core.settings import parse_args
from cifar10_fast.data.loaders import cifar10_dataloaders
from cifar10_fast.training import recording
from cifar10_fast.training.callbacks import TimeToAccuracy
from cifar10_fast.training.fit import fit
from cifar10_fast.training.lr_schedule import one_cycle

# What hands a tensor's value to the host: on a GPU each waits for the device to finish its queue.
HOST_READS = ("cpu", "item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__format__")
# Reads of tensors that the host makes for itself and that stay on the CPU on a GPU run too, so
# they wait for nothing: fastai's one-cycle schedule looks its phase up in a CPU tensor of phase
# boundaries every batch, and torch's DataLoader draws its iterator's seed once an epoch.
HOST_ONLY_TENSORS = ("fastai/callback/schedule.py", "torch/utils/data/dataloader.py")


class HostReads:
    """Counts the calls of HOST_READS made while `counting` is on, by the file that makes them."""

    def __init__(self, monkeypatch):
        self.counting, self.calls = False, []
        for name in HOST_READS:
            monkeypatch.setattr(torch.Tensor, name, self.counted(name, getattr(torch.Tensor, name)))

    def counted(self, name, method):
        def read(tensor, *args, **kwargs):
            if self.counting:
                self.calls.append((name, sys._getframe(1).f_code.co_filename))
            return method(tensor, *args, **kwargs)
        return read

    def of_device_tensors(self):
        return [(name, caller) for name, caller in self.calls if not caller.endswith(HOST_ONLY_TENSORS)]

    def count(self, name):
        return sum(called == name for called, _ in self.of_device_tensors())


class CountTrainingBatches(Callback):
    """Counts from the start of each epoch's training batches (before any other callback's
    before_train) to their end, before the Recorder reads the epoch's values in after_train."""
    order = -100

    def __init__(self, reads):
        self.reads = reads

    def before_train(self):
        self.reads.counting = True


class StopCounting(Callback):
    order = Recorder.order - 1

    def __init__(self, reads):
        self.reads = reads

    def after_train(self):
        self.reads.counting = False


def fit_as_a_run(tmp_path, folder, reads, epochs=2, **flags):
    """A run's Learner and fit (train_fastai.make_learner, checkpoint.fit with the run's callbacks)."""
    argv = ["--width", "8", "--bs", "16", "--epochs", str(epochs), *[f"--{flag.replace('_', '-')}" for flag in flags]]
    args = member(parse_args(argv), {})
    dls, _ = cifar10_dataloaders(folder, bs=args.bs, seed=0)
    learn = train_fastai.make_learner(dls, args, tmp_path, "fp32")
    learn.add_cbs([CountTrainingBatches(reads), StopCounting(reads)])
    fit(learn, one_cycle(1e-4, 1e-3, args.peak_epoch, epochs), tmp_path, {}, [TimeToAccuracy()])
    return learn


def test_training_batches_read_no_tensor_on_the_host(tmp_path, tiny_folder, monkeypatch):
    reads = HostReads(monkeypatch)
    learn = fit_as_a_run(tmp_path, tiny_folder, reads)
    assert len(learn.dls.train) * 2 == 10  # the window saw every training batch of both epochs
    assert reads.of_device_tensors() == []
    assert len(learn.recorder.values) == 2 and all(isinstance(v, float) for v in learn.recorder.values[-1])


def test_the_instrument_sees_what_fastai_reads_by_default(tmp_path, tiny_folder, monkeypatch):
    """fastai's own Recorder and ProgressCallback copy the loss to the host at every batch."""
    monkeypatch.setattr(train_fastai, "record_on_device", lambda learn: learn)
    reads = HostReads(monkeypatch)
    fit_as_a_run(tmp_path, tiny_folder, reads)
    assert reads.count("cpu") >= 10 and reads.count("item") >= 10


def test_off_a_terminal_each_epoch_is_one_line_in_columns(tmp_path, tiny_folder, monkeypatch, capsys):
    monkeypatch.setattr(recording.sys.stdout, "isatty", lambda: False, raising=False)
    fit_as_a_run(tmp_path, tiny_folder, HostReads(monkeypatch), epochs=3)
    printed = capsys.readouterr().out
    assert "\r" not in printed
    lines = printed.strip().splitlines()
    header, *epochs = lines[[line.split()[:1] for line in lines].index(["epoch"]):]  # after the data's own lines
    assert header.split() == ["epoch", "train_loss", "valid_loss", "accuracy", "time"]
    assert [line.split()[0] for line in epochs] == ["0", "1", "2"]
    assert len({len(line) for line in [header, *epochs]}) == 1  # fixed-width columns


def test_rows_from_history_csv_print_like_the_others():
    """After a --resume, the epochs before the interruption come back as history.csv's strings."""
    table = recording.EpochTable(["epoch", "train_loss", "valid_loss", "accuracy", "time"])
    assert table.line(["3", "2.302585", "2.1", "0.125", "00:04"]) == table.line([3, 2.302585, 2.1, 0.125, "00:04"])


def test_the_range_test_is_labelled_and_its_result_has_a_line_of_its_own(tmp_path, tiny_folder, capsys):
    train_fastai.main(["--find-lr", "--data", str(tiny_folder), "--out", str(tmp_path), "--width", "8", "--bs", "16"])
    lines = capsys.readouterr().out.splitlines()
    assert "LR range test: 100 iterations, LR 1e-07 to 10" in lines
    assert any(re.match(r"LR range test: stopped (after its 100 iterations|at iteration \d+ of 100, where the loss "
                        r"diverged .*); LRMIN = ", line) for line in lines)
    assert not [line for line in lines if "Epoch" in line or "\r" in line]
    progress = [line for line in lines if re.fullmatch(r"LR range test: \d+/100 iterations, LR \S+", line)]
    assert [line.split()[3] for line in progress][:3] == ["10/100", "20/100", "30/100"]  # a line at each tenth
    from bench.latency import MARKS  # the benches time the range test between its first line and its result's
    assert [mark for mark in ("range_test_start", "range_test_end") if not any(map(MARKS[mark].match, lines))] == []


def test_on_a_terminal_the_range_test_shows_its_bars_and_its_result_on_a_line_of_its_own(tmp_path, tiny_folder,
                                                                                          monkeypatch, capsys):
    monkeypatch.setattr(recording.sys.stdout, "isatty", lambda: True, raising=False)
    train_fastai.main(["--find-lr", "--data", str(tiny_folder), "--out", str(tmp_path), "--width", "8", "--bs", "16"])
    out = capsys.readouterr().out
    assert "|" in out and "%" in out and not re.search(r"\d+/100 iterations", out)  # the bars, not the lines
    for line in ("LR range test: stopped ", "CPU only: "):  # each on the bar's line, cleared first
        assert f"\r\x1b[2K{line}" in out


def test_sync_debug_is_inert_on_the_cpu(tmp_path, tiny_folder, monkeypatch):
    switched = []
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", switched.append)
    learn = fit_as_a_run(tmp_path, tiny_folder, HostReads(monkeypatch), epochs=1, sync_debug=True)
    assert any(isinstance(cb, recording.FailOnHostSync) for cb in learn.cbs) and switched == []


def test_on_a_terminal_the_bars_run_and_the_table_keeps_its_columns(tmp_path, tiny_folder, monkeypatch, capsys):
    monkeypatch.setattr(recording.sys.stdout, "isatty", lambda: True, raising=False)
    learn = fit_as_a_run(tmp_path, tiny_folder, HostReads(monkeypatch), epochs=2)
    assert any(isinstance(cb, recording.TerminalBars) for cb in learn.cbs)
    rows = [line.strip() for line in capsys.readouterr().out.replace("\r", "\n").splitlines()]
    header = next(row for row in rows if row.startswith("epoch"))
    assert header.split() == ["epoch", "train_loss", "valid_loss", "accuracy", "time"]
    assert [row.split()[0] for row in rows if row[:1].isdigit() and len(row.split()) == 5] == ["0", "1"]
