"""Interruption and resume: the fit keeps what it has done in checkpoint.json (with
checkpoint.pth, or model.safetensors once the fit is done), and `--resume` continues from it on the
same one-cycle schedule.

Three moments write it: Ctrl-C or SIGTERM during the fit (the last finished epoch's weights and
optimizer state, from a copy kept in memory); an epoch's end once lifecycle.CHECKPOINT_EVERY_S of
fitting have passed since the last one (the same, for a run killed outright); and the fit's end,
whatever comes after: the weights as model.safetensors (what the outputs would write anyway) and
checkpoint.json marked fit_done, so that nothing after the fit (a signal, a full disk, a crash while
the outputs are written) loses it: --resume of such a run writes the outputs without training. The
run deletes both files once it is whole."""
import time
import warnings

import fastai.distributed  # noqa: F401  Learner.distrib_ctx
import torch
from fastai.callback.core import Callback
from fastai.learner import load_model
from safetensors.torch import load_file, save_file

from cifar10_fast.core.config import UsageError
from cifar10_fast.core.files import atomic
from cifar10_fast.core.internals import compile_seconds, uncompiled
from cifar10_fast.core.lifecycle import CHECKPOINT_EVERY_S
from cifar10_fast.core.run_folder import (
    CHECKPOINT_WEIGHTS,
    WEIGHTS,
    read_config,
    read_history,
    read_progress,
    write_progress,
)
from cifar10_fast.training.callbacks import EpochSnapshot, HistoryLogger, StopOnDivergence, TimeToAccuracy
from cifar10_fast.training.outputs import write_curves
from cifar10_fast.training.recording import sync_debug_lifted_after


def fit(learn, schedule, run_dir, resumed, cbs=()):
    """fit_one_cycle from the start or, resumed, from the checkpoint's epoch on the same schedule,
    the fit's end kept at once; returns the fit's seconds, those before an interruption included,
    torch.compile's apart. A resumed fit that was done trains nothing: fastai skips its epochs,
    logging their lines again."""
    done, fit_was_done = resumed.get("epochs_done", 0), resumed.get("fit_done", False)
    if fit_was_done:
        print(f"the fit was done ({done} epochs): writing its outputs, training nothing")
        schedule = {**schedule, "n_epoch": done}
    start, compiling, finished = time.perf_counter(), compile_seconds(), False

    def seconds():
        if fit_was_done:
            return resumed["fit_seconds"]
        return resumed.get("fit_seconds", 0) + time.perf_counter() - start - (compile_seconds() - compiling)

    logger, snapshot, divergence = HistoryLogger(resumed.get("history", [])), EpochSnapshot(resumed), StopOnDivergence()
    periodic = PeriodicCheckpoint(run_dir, snapshot, logger, seconds, first_epoch=done)

    try:
        on_cpu = learn.dls.device.type == "cpu"  # torch's SyncBatchNorm needs GPUs
        with sync_debug_lifted_after(learn), learn.distrib_ctx(sync_bn=not on_cpu, cpu=on_cpu):
            learn.fit_one_cycle(**schedule, cbs=[logger, snapshot, periodic, divergence, *cbs], start_epoch=done)
        if divergence.problem:
            raise UsageError(divergence.problem)
        finished = True
        if learn.dls.device.type == "cuda":
            torch.cuda.synchronize(learn.dls.device)
        fit_seconds = seconds()
        if not fit_was_done:
            keep_finished_fit(learn, run_dir, logger.rows, fit_seconds, resumed, cbs)
    except KeyboardInterrupt:
        if not finished:
            save_checkpoint(run_dir, snapshot, logger.rows, seconds())
        elif not fit_was_done:  # the signal came while the fit was kept: kept again, whole
            keep_finished_fit(learn, run_dir, logger.rows, seconds(), resumed, cbs)
        raise
    finally:
        logger.close()
    return fit_seconds


class PeriodicCheckpoint(Callback):
    """At the end of an epoch trained from `first_epoch` on, once CHECKPOINT_EVERY_S of fitting have
    passed since the fit began or the last checkpoint, the epoch's snapshot as the checkpoint, with
    the fit's `seconds()` so far (without the curves: a figure costs more)."""
    order = EpochSnapshot.order + 1  # the snapshot holds the epoch

    def __init__(self, run_dir, snapshot, logger, seconds, first_epoch=0):
        self.run_dir, self.snapshot, self.logger, self.seconds = run_dir, snapshot, logger, seconds
        self.first_epoch = first_epoch

    def before_fit(self):
        self.last = time.perf_counter()

    def after_epoch(self):
        trained = self.epoch >= self.first_epoch
        if trained and self.epoch + 1 < self.n_epoch and time.perf_counter() - self.last >= CHECKPOINT_EVERY_S:
            save_checkpoint(self.run_dir, self.snapshot, self.logger.rows, self.seconds(), curves=False)
            self.last = time.perf_counter()


def save_checkpoint(run_dir, snapshot, rows, fit_seconds, curves=True):
    """The last finished epoch's weights and optimizer state (fastai's save_model format) and what
    the resumed run needs to join up; nothing where no epoch has finished since the fit began (a
    resumed run keeps the checkpoint it started from)."""
    if snapshot.state is None:
        return
    with atomic(run_dir / CHECKPOINT_WEIGHTS) as tmp:
        torch.save(snapshot.state, tmp)
    done = snapshot.progress_so_far["epochs_done"]
    write_progress(run_dir, {**snapshot.progress_so_far, "history": rows[:done], "fit_seconds": fit_seconds})
    if curves:
        write_curves(read_history(run_dir).iloc[:done], run_dir)


def keep_finished_fit(learn, run_dir, rows, fit_seconds, resumed, cbs):
    """The fit's end: its weights as model.safetensors, and checkpoint.json marked fit_done with
    what the outputs need (the whole schedule, the history, the time to accuracy). The epoch
    checkpoint goes once that is written: nothing trains after."""
    write_weights(plain_model(learn), run_dir)
    hps = learn.recorder.hps
    timers = [cb.state() for cb in cbs if isinstance(cb, TimeToAccuracy)]
    write_progress(run_dir, {"epochs_done": len(rows), "fit_done": True, "history": rows, "fit_seconds": fit_seconds,
                             "lrs": [*resumed.get("lrs", []), *map(float, hps["lr"])],
                             "moms": [*resumed.get("moms", []), *map(float, hps["mom"])],
                             **({"time_to_accuracy": timers[0]} if timers else {})})
    (run_dir / CHECKPOINT_WEIGHTS).unlink(missing_ok=True)


def plain_model(learn):
    """The module under a compiled one (the same parameters): what is saved and exported, so that
    the weights keep their names and the export loads without the compiler."""
    return uncompiled(learn.model)


def write_weights(model, run_dir):
    """model.safetensors, what predict.py loads without unpickling anything (with classes.json),
    written the moment the fit ends (checkpoint.keep_finished_fit). Floating-point tensors are
    stored as fp32 whatever the training precision; BatchNorm's integer batch counts keep their type."""
    state = {name: (tensor.float() if tensor.is_floating_point() else tensor).detach().contiguous().cpu()
             for name, tensor in model.state_dict().items()}
    with atomic(run_dir / WEIGHTS) as tmp:
        save_file(state, tmp, metadata={"format": "pt", "model": "CustomResNet"})


def load_checkpoint(learn, run_dir):
    """The progress saved in checkpoint.json, and into `learn` the weights and optimizer state of
    checkpoint.pth (weights_only: the file cannot run code) or, once the fit was done, the weights
    of model.safetensors."""
    progress = read_progress(run_dir)
    weights = run_dir / (WEIGHTS if progress.get("fit_done") else CHECKPOINT_WEIGHTS)
    learn.create_opt()
    try:
        if progress.get("fit_done"):
            plain_model(learn).load_state_dict(load_file(weights, device=str(learn.dls.device)))
        else:
            with warnings.catch_warnings():
                warnings.filterwarnings("error", "Could not load the optimizer state")  # fastai only warns
                load_model(weights, learn.model, learn.opt, device=learn.dls.device)
    except Exception as e:
        raise UsageError(f"{weights} cannot be loaded ({type(e).__name__}): start a new run") from None
    return progress


def resumed_config(run_dir, config):
    """The config of a run resumed on the data it started with (compared by content, not by the
    folder it was unpacked into), keeping where its LRs came from."""
    saved = read_config(run_dir)
    for key in ("data_files", "data_sha256", "train_images", "test_images", "classes"):
        if saved.get(key) != config[key]:
            raise UsageError(f"{run_dir} was run on other data ({key}: {saved.get(key)}, now {config[key]}): resume it "
                             f"with the data it was run on ({saved.get('data_given') or 'the download'}), or start a "
                             "new run")
    return {**config, **{key: saved[key] for key in ("lr_source", "finder_iters") if key in saved}}
