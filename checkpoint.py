"""Interruption and resume: Ctrl-C or SIGTERM during the fit writes the last finished epoch as a
checkpoint, and `--resume` continues from it on the same one-cycle schedule."""
import hashlib
import json
import os
import signal
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import torch
from fastai.learner import load_model

from callbacks import EpochSnapshot, HistoryLogger, StopOnDivergence
from data import SPLITS, image_files
from errors import command_to_retype
from files import atomic, write_json
from hardware import seconds_compiling
from outputs import write_curves
from settings import UsageError

TRAINER = Path(__file__).with_name("train_fastai.py")


def trainer_as_run():
    """train_fastai.py as the user ran it (the path they typed, which may pass through links), or
    this checkout's where it was called from Python (the bench, the tests)."""
    script = getattr(sys.modules["__main__"], "__file__", None)
    return Path(script) if script and Path(script).name == TRAINER.name else TRAINER


class Interrupted(Exception):
    """Ctrl-C or SIGTERM during training, after the checkpoint is written: says how to resume."""


@contextmanager
def sigterm_as_ctrl_c():
    """SIGTERM (what a scheduler sends before killing a job) ends training as Ctrl-C does."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def fit(learn, schedule, run_dir, resumed, cbs=()):
    """fit_one_cycle from the start or, resumed, from the checkpoint's epoch on the same schedule;
    returns the fit's seconds, those before an interruption included, torch.compile's apart."""
    logger, snapshot, divergence = HistoryLogger(resumed.get("history", [])), EpochSnapshot(resumed), StopOnDivergence()
    start, compiling = time.perf_counter(), seconds_compiling()

    def seconds():
        return resumed.get("fit_seconds", 0) + time.perf_counter() - start - (seconds_compiling() - compiling)

    try:
        on_cpu = learn.dls.device.type == "cpu"  # torch's SyncBatchNorm needs GPUs
        with sigterm_as_ctrl_c(), learn.distrib_ctx(sync_bn=not on_cpu, cpu=on_cpu):
            learn.fit_one_cycle(**schedule, cbs=[logger, snapshot, divergence, *cbs],
                                start_epoch=resumed.get("epochs_done", 0))
    except KeyboardInterrupt:
        raise Interrupted(save_checkpoint(run_dir, snapshot, logger.rows, seconds(), resumed)) from None
    if divergence.problem:
        raise UsageError(divergence.problem)
    if learn.dls.device.type == "cuda":
        torch.cuda.synchronize(learn.dls.device)
    return seconds()


def save_checkpoint(run_dir, snapshot, rows, fit_seconds, resumed):
    """Write the last finished epoch's weights and optimizer state (fastai's save_model format)
    and what the resumed run needs to join up; returns the message for the user."""
    if snapshot.state is not None:
        with atomic(run_dir / "checkpoint.pth") as tmp:
            torch.save(snapshot.state, tmp)
        done = snapshot.progress_so_far["epochs_done"]
        write_json(run_dir / "checkpoint.json",
                   {**snapshot.progress_so_far, "history": rows[:done], "fit_seconds": fit_seconds})
        write_curves(pd.read_csv(run_dir / "history.csv").iloc[:done], run_dir)
    elif not resumed:
        return "interrupted before the first epoch was saved: nothing to resume; start the run again"
    done = json.loads((run_dir / "checkpoint.json").read_text())["epochs_done"]
    return (f"interrupted; epochs 1-{done} are saved in {run_dir}. Resume with: "
            f"{command_to_retype(trainer_as_run())} --resume {run_dir}")


def load_checkpoint(learn, run_dir):
    """Weights and optimizer state into `learn` (weights_only: the file cannot run code), and the
    progress saved with them."""
    learn.create_opt()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", "Could not load the optimizer state")  # fastai only warns
            load_model(run_dir / "checkpoint.pth", learn.model, learn.opt, device=learn.dls.device)
    except Exception as e:
        raise UsageError(f"{run_dir / 'checkpoint.pth'} cannot be loaded ({type(e).__name__}): "
                         "start a new run") from None
    return json.loads((run_dir / "checkpoint.json").read_text())


def data_fingerprint(folder):
    """What identifies the data wherever it lies (another CIFAR10_CACHE unpacks it elsewhere): the
    number of images the loader reads under train/ and test/, and a hash of their relative names
    and sizes. What the loader ignores is left out, and so never followed: a link that loops back
    up the tree or leads nowhere, a folder inside a class folder, a file that is not an image."""
    start = len(str(folder)) + 1
    listing = sorted(f"{path[start:]}\t{os.stat(path).st_size}\n" for split in SPLITS
                     for path in image_files(Path(folder), split))
    return {"data_files": len(listing), "data_sha256": hashlib.sha256("".join(listing).encode()).hexdigest()}


def resumed_config(run_dir, config):
    """The config of a run resumed on the data it started with (compared by content, not by the
    folder it was unpacked into), keeping where its LRs came from."""
    saved = json.loads((Path(run_dir) / "config.json").read_text())
    for key in ("data_files", "data_sha256", "train_images", "test_images", "classes"):
        if saved.get(key) != config[key]:
            raise UsageError(f"{run_dir} was run on other data ({key}: {saved.get(key)}, now {config[key]}): resume it "
                             f"with the data it was run on ({saved.get('data_given') or 'the download'}), or start a "
                             "new run")
    return {**config, **{key: saved[key] for key in ("lr_source", "finder_iters") if key in saved}}
