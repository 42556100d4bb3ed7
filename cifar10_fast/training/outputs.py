"""What a run writes: its folder, the schedule, curves and interpretation figures, the weights,
the exported learner and the summary."""
import subprocess
import warnings
from datetime import datetime
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from fastai.interpret import ClassificationInterpretation
from fastai.torch_core import num_distrib
from fastai.vision.data import get_grid

from cifar10_fast.core.config import UsageError
from cifar10_fast.core.files import atomic, figure_text, save_figure, unused_names, write_csv, write_json
from cifar10_fast.core.report import write_report
from cifar10_fast.core.run_folder import (
    CLASSES,
    CONFUSION_MATRIX_PNG,
    CURVES_PNG,
    EXPORT,
    LR_SCHEDULE_CSV,
    LR_SCHEDULE_PNG,
    MISCLASSIFIED_PNG,
    read_history,
    write_summary,
)
from cifar10_fast.data.loaders import Squash
from cifar10_fast.training.hardware import device_name, library_versions


def new_run_dir(out, name):
    """A new folder for this run; an existing one is never reused."""
    stem = datetime.now().strftime("%Y%m%d-%H%M%S") + (f"-{name}" if name else "")
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create --out {out} ({e.strerror}): choose a writable folder") from None
    for candidate in unused_names(stem):
        run_dir = Path(out) / candidate
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue
        except OSError as e:
            raise UsageError(f"cannot create {run_dir} ({e.strerror}): choose a writable --out") from None
    raise UsageError(f"too many runs named {stem} in {out}: choose another --name")


def write_schedule(learn, run_dir, lr_min, lr_max, resumed):
    hps = learn.recorder.hps
    iters_per_epoch = len(learn.dls.train)
    lrs, moms = [*resumed.get("lrs", []), *hps["lr"]], [*resumed.get("moms", []), *hps["mom"]]
    schedule = pd.DataFrame({"iteration": np.arange(len(lrs)), "lr": lrs, "mom": moms})
    schedule.insert(1, "epoch", schedule.iteration / iters_per_epoch)
    write_csv(run_dir / LR_SCHEDULE_CSV, schedule)
    fig, (ax_lr, ax_mom) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    ax_lr.plot(schedule.epoch, schedule.lr)
    for lr, label in ((lr_min, "LRMIN"), (lr_max, "LRMAX")):
        ax_lr.axhline(lr, ls=":", c="gray")
        ax_lr.annotate(f"{label} {lr:.2e}", (0, lr), textcoords="offset points", xytext=(2, 3), fontsize=8)
    ax_lr.set(ylabel="learning rate", title="one-cycle schedule, per iteration")
    ax_mom.plot(schedule.epoch, schedule.mom)
    ax_mom.set(xlabel="epoch", ylabel="momentum (Adam beta1)")
    save_figure(fig, run_dir / LR_SCHEDULE_PNG)


def write_curves(history, run_dir):
    epochs = history.epoch + 1
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, history.train_loss, label="train (smoothed)")
    ax_loss.plot(epochs, history.valid_loss, label="test")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss")
    ax_loss.legend()
    ax_acc.plot(epochs, 100 * history.accuracy, marker="o")
    ax_acc.axhline(90, ls=":", c="gray")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)",
               title=f"final {100 * history.accuracy.iloc[-1]:.2f}%")
    save_figure(fig, run_dir / CURVES_PNG)


class PredictedInterpretation(ClassificationInterpretation):
    """fastai's interpretation of the test set from its predictions already made (probabilities,
    targets and losses, in the test set's order): its confusion matrix and top losses count them
    instead of passing over the test set again."""

    def __init__(self, learn, probs, targets, losses):
        super().__init__(learn, learn.dls.valid, losses)
        self.probs, self.targets, self.decoded = probs, targets, learn.loss_func.decodes(probs)
        self.vocab = [figure_text(name) for name in self.vocab]  # the class names, as the figures show them

    def confusion_matrix(self):
        classes = len(self.vocab)
        # rows the actual class, columns the predicted
        pairs = self.targets.flatten() * classes + self.decoded.flatten()
        return torch.bincount(pairs, minlength=classes * classes).view(classes, classes).numpy()

    def plot_top_losses(self, k, **grid):
        """The `k` test images with the highest loss, titled as fastai.vision.learner titles them
        (a module that loads torchvision, and through it torch._dynamo: 2 s of every run, for
        this figure alone), from the predictions made: only those k images are read again."""
        losses, rows = self.top_losses(k)
        axes = get_grid(len(rows), title="Prediction/Actual/Loss/Probability", **grid)
        for ax, row, loss in zip(axes, rows.tolist(), losses.tolist()):
            image, _ = self.dl.dataset[row]
            Squash()(image).show(ctx=ax)  # as the model saw it
            predicted, actual = self.vocab[int(self.decoded[row])], self.vocab[int(self.targets[row])]
            ax.set_title(f"{predicted}/{actual} / {loss:.2f} / {self.probs[row].max():.2f}")


def write_interpretation(learn, run_dir, predictions, shown=10):
    """The confusion matrix, and the `shown` test images with the highest loss (all of them in a
    smaller test set), from the test set's `predictions` (probabilities, targets, losses)."""
    interp = PredictedInterpretation(learn, *predictions)
    interp.plot_confusion_matrix(figsize=(7, 7), title="confusion matrix (test set)")
    save_figure(plt.gcf(), run_dir / CONFUSION_MATRIX_PNG)
    shown = min(shown, len(interp.losses))
    with plt.rc_context({"axes.titlesize": 9}):
        interp.plot_top_losses(shown, nrows=min(2, shown), figsize=(15, 7))
        save_figure(plt.gcf(), run_dir / MISCLASSIFIED_PNG)


def write_classes(learn, run_dir, stats):
    """classes.json: the class names and the normalisation that go with model.safetensors."""
    write_json(run_dir / CLASSES, {"classes": list(learn.dls.vocab), "mean": stats[0], "std": stats[1]})


def write_export(learn, run_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fastai warns that a pickle runs code: that is for the loader
        with atomic(run_dir / EXPORT) as tmp:
            learn.export(tmp.absolute())  # export joins learn.path (the run folder) to a relative name


def git_commit(folder=Path(__file__).parent):
    """The commit checked out in `folder` ("-dirty" with uncommitted changes), or None outside a git checkout."""
    try:
        done = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=40"], cwd=folder,
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def summarize(learn, run_dir, config, fit_seconds, device):
    """summary.json's figures of the fit: the final epoch's accuracy is the headline, never the best."""
    history = read_history(run_dir)
    # The fit's seconds hold each epoch's training and test passes: its images are both.
    images = len(history) * (len(learn.dls.train) * learn.dls.train.bs + len(learn.dls.valid.dataset))
    return {
        "final_accuracy": float(history.accuracy.iloc[-1]),
        "best_accuracy": float(history.accuracy.max()),
        "epochs": len(history),  # fewer than asked when --target-acc stopped the run
        "parameters": sum(p.numel() for p in learn.model.parameters() if p.requires_grad),
        "fit_seconds": round(fit_seconds, 3),
        "fit_images_per_s": round(images / fit_seconds, 1),
        "device": device_name(device),
        "versions": library_versions(),
        "seed": config.seed,
        "git_commit": git_commit(),
        "processes": max(num_distrib(), 1), "effective_bs": config.bs,
    }


def write_outputs(learn, run_dir, summary, predictions, stats, lrs, resumed):
    """Everything a finished fit leaves in its run folder, report.html last: the schedule, curves and
    interpretation figures, summary.json, classes.json and the exported learner. `predictions` are
    the test set's (probabilities, targets, losses); `lrs` are LRMIN and LRMAX."""
    write_schedule(learn, run_dir, *lrs, resumed)
    write_curves(read_history(run_dir), run_dir)
    write_interpretation(learn, run_dir, predictions)
    write_summary(run_dir, summary)
    write_classes(learn, run_dir, stats)
    write_export(learn, run_dir)
    write_report(run_dir)
