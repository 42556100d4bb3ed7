"""The fastai callbacks of a run: time to accuracy, the divergence stop, the epoch snapshot an
interruption saves, the history log, the last test pass's predictions, and the flip of test-time
augmentation."""
import copy
import os
import time

import numpy as np
import torch
from fastai.callback.core import Callback, CancelFitException
from fastai.callback.progress import CSVLogger
from fastai.learner import Recorder
from fastai.metrics import accuracy
from fastai.torch_core import get_model

from cifar10_fast.core.internals import compile_seconds
from cifar10_fast.core.run_folder import HISTORY

ACCURACY_MILESTONES = (0.90, 0.93, 0.94)


class TimeToAccuracy(Callback):
    """The first epoch, and the seconds since the fit began, at which test accuracy reached each
    milestone; with a `target`, stops the fit at the end of the epoch that reaches it. A fit
    resumed from an interruption counts from there: the epochs before were trained by the
    interrupted run. One resumed after its end takes back what it had reached (`state()`, saved
    in the checkpoint)."""
    order = Recorder.order + 1  # the Recorder's after_epoch has the epoch's accuracy and logs its line

    def __init__(self, milestones=ACCURACY_MILESTONES, target=None, resumed=None):
        resumed = resumed or {}
        self.milestones = sorted({*milestones, *([target] if target else [])})
        self.target, self.start_epoch = target, resumed.get("epochs_done", 0)
        self.earlier = resumed.get("time_to_accuracy", {"reached": {}, "stopped_early": False})

    def before_fit(self):
        self.start, self.stopped_early = time.perf_counter(), self.earlier["stopped_early"]
        self.reached = {float(milestone): tuple(when) for milestone, when in self.earlier["reached"].items()}
        self.compiling_before = compile_seconds()  # compiling is not training: --compile counts it apart

    def after_epoch(self):
        if self.epoch < self.start_epoch:
            return  # skipped by fit_one_cycle on resume
        accuracy = float(dict(zip(self.recorder.metric_names[1:-1], self.recorder.values[-1]))["accuracy"])
        for milestone in self.milestones:
            if accuracy >= milestone and milestone not in self.reached:
                seconds = time.perf_counter() - self.start - (compile_seconds() - self.compiling_before)
                self.reached[milestone] = (self.epoch + 1, round(seconds, 3))
        if self.target and accuracy >= self.target and self.epoch + 1 < self.n_epoch:
            self.stopped_early = True
            raise CancelFitException

    def results(self):
        results = {}
        for milestone in self.milestones:
            epoch, seconds = self.reached.get(milestone, (None, None))
            results[f"first_epoch_{100 * milestone:g}"] = epoch
            results[f"seconds_to_{100 * milestone:g}"] = seconds
        return {**results, "target_acc": self.target, "stopped_early": self.stopped_early}

    def state(self):
        """What the fit reached, as JSON: {"reached": {milestone: [epoch, seconds]}, "stopped_early"}."""
        return {"reached": {str(milestone): list(when) for milestone, when in self.reached.items()},
                "stopped_early": self.stopped_early}


class StopOnDivergence(Callback):
    """Stops training when the loss is no longer finite or has passed `factor` times the loss of
    guessing, ln(classes): a sign that the LR is too high. The caller then reports `problem`. The
    worst loss is kept on the device and read once an epoch, before its test pass: a read every
    batch would make the host wait for the GPU at each step, and a diverged epoch costs seconds."""
    order = Recorder.order + 1

    def __init__(self, factor=4):
        self.factor, self.problem = factor, None

    def before_train(self):
        self.worst = None

    def after_batch(self):
        if self.training:
            loss = self.loss.detach()
            self.worst = loss if self.worst is None else torch.maximum(self.worst, loss)  # NaN wins, as it should

    def after_train(self):
        worst = float(self.worst)
        if not np.isfinite(worst) or worst > self.factor * np.log(len(self.dls.vocab)):
            self.problem = (f"the loss diverged ({worst:.3g}) in epoch {self.epoch + 1}, at LRs up to "
                            f"{max(self.recorder.lrs[-self.n_iter:]):.3g}: the LR is likely too high; "
                            "lower --lr-max and --lr-min, or rerun the LR range test")
            raise CancelFitException


class EpochSnapshot(Callback):
    """An in-memory copy of the weights and optimizer state as the last finished epoch left them:
    what an interruption writes as the checkpoint (a copy on the device costs little; a file
    every epoch would not, so the fit writes one only every lifecycle.CHECKPOINT_EVERY_S)."""
    order = Recorder.order + 1  # after the recorder has logged the epoch

    def __init__(self, resumed):
        self.resumed, self.state = resumed, None

    def after_epoch(self):
        if self.epoch < self.resumed.get("epochs_done", 0):
            return  # an epoch fit_one_cycle skipped when resuming
        self.state = {"model": {k: v.detach().clone() for k, v in get_model(self.model).state_dict().items()},
                      "opt": copy.deepcopy(self.opt.state_dict())}
        hps = self.learn.param_scheduler.hps  # the recorder gets them only once fit ends
        self.progress_so_far = {"epochs_done": self.epoch + 1,
                                "lrs": [*self.resumed.get("lrs", []), *map(float, hps["lr"])],
                                "moms": [*self.resumed.get("moms", []), *map(float, hps["mom"])]}


class HistoryLogger(CSVLogger):
    """fastai's CSVLogger (its file and header, its closing), each epoch's line written and synced
    to disk as fastai writes it; on a resumed run, the epochs fit_one_cycle skips are logged with
    their rows from before the interruption, so history.csv is whole again."""

    def __init__(self, earlier_rows):
        super().__init__(HISTORY)
        self.earlier_rows, self.rows = earlier_rows, []

    def before_fit(self):
        super().before_fit()
        if hasattr(self, "old_logger"):  # CSVLogger opened the file (not under get_preds): its lines are ours
            self.learn.logger = self.write_line

    def write_line(self, log):
        if log[0] < len(self.earlier_rows):
            log = self.earlier_rows[log[0]]
        self.rows.append([str(v) for v in log])
        try:
            self.file.write(",".join(self.rows[-1]) + "\n")
            self.file.flush()
            os.fsync(self.file.fileno())
        except OSError as e:  # a write names no file: this one (a full disk, say)
            e.filename = e.filename or str(self.path / self.fname)
            raise
        self.old_logger(log)

    def close(self):
        """The file closed where the fit did not reach after_fit (Ctrl-C, SIGTERM: fastai runs no
        after_fit for them). Every line is on disk already: each is flushed as it is written."""
        file = getattr(self, "file", None)
        if file is not None and not file.closed:
            file.close()


class LastTestPass(Callback):
    """The model's outputs and the targets of each test batch of the fit, kept on the device as they
    come (no host read), those of the last test pass in the end: the final model's predictions, from
    which the interpretation and flip TTA start instead of passing over the test set again."""

    def before_validate(self):
        self.outputs, self.targets = [], []

    def after_batch(self):
        if not self.training:
            self.outputs.append(self.pred.detach())
            self.targets.append(self.yb[0])

    def predictions(self, learn):
        """(probabilities, targets, losses) of every test image, in the test set's order, on the
        host: from the last test pass where it covered the whole test set, else (a process of
        several, each testing its share; a resumed run with no epoch left) from one pass of
        fastai's get_preds."""
        outputs = getattr(self, "outputs", [])
        if sum(map(len, outputs)) != len(learn.dls.valid.dataset):
            return learn.get_preds(dl=learn.dls.valid, with_loss=True)
        outputs, targets = torch.cat(outputs).float(), torch.cat(self.targets)
        with learn.loss_not_reduced():  # each image's loss, as get_preds(with_loss=True) gives it
            losses = learn.loss_func(outputs, targets)
        return learn.loss_func.activation(outputs).cpu(), targets.cpu(), losses.cpu()


class FlipInputs(Callback):
    """Mirror every input batch left-right where it lies (on the GPU path, on the device)."""

    def before_batch(self):
        self.learn.xb = tuple(x.flip(-1) for x in self.xb)


def flip_tta_accuracy(learn, probs, targets):
    """Test accuracy of the final model when it averages its probabilities for each image (`probs`,
    in the test set's order) and its mirror."""
    mirrored, _ = learn.get_preds(dl=learn.dls.valid, cbs=[FlipInputs()])
    return float(accuracy((probs + mirrored) / 2, targets))
