"""The LR range test, the rule that reads LRMIN and LRMAX off its curve, and the one-cycle
schedule they make."""
import shutil

import fastai.callback.schedule  # noqa: F401  Learner.lr_find and fit_one_cycle, Recorder.plot_lr_find
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from fastai.callback.core import Callback

from cifar10_fast.core.config import FINDER_END_LR, FINDER_START_LR, LRMAX_DIVISOR, UsageError
from cifar10_fast.core.files import save_figure, write_csv
from cifar10_fast.core.run_folder import LR_FIND_CSV, LR_FIND_PNG, write_lr_find
from cifar10_fast.training.recording import print_line, showing_range_test

# The smoothed loss must fall by more than this many standard deviations of one batch's loss. Pure
# noise through fastai's smoothing (an average over about 50 batches) falls, from the start of the
# usable curve to its lowest point, by 0.9 of them at the 99th percentile of 5,000 flat curves of
# 100 iterations (1.2 at the 99.9th; 1.4 with 30 iterations or heavy-tailed noise); the real
# CIFAR-10 curve in tests/ falls by 6.7 of them.
NOISE_MULTIPLE = 2
LR_RULE = ("On fastai's smoothed lr_find loss, once it has fallen by more than twice the standard deviation of one "
           "batch's loss: LRMAX = the LR of the lowest loss / 10; LRMIN = the first LR at which the loss has made "
           "10% of its fall to that lowest point, capped at LRMAX / 10")


class BatchLosses(Callback):
    """Each training batch's loss as it is, beside the smoothed curve fastai records: the noise
    the LR rule measures the fall against."""

    def before_fit(self):
        self.losses = []

    def after_batch(self):
        if self.training:
            self.losses.append(self.loss.detach())  # read once the test is over, not at every step


def batch_noise(batch_losses):
    """The standard deviation of one batch's loss, robustly: the median of the absolute first
    differences passes over both the curve's steep part (less than half of it, where the trend
    moves the loss between neighbouring batches) and the spikes of divergence. A difference of two
    draws has twice their variance, hence / sqrt(2); 1.4826 turns a median absolute deviation
    into a standard deviation."""
    return float(1.4826 * np.median(np.abs(np.diff(batch_losses))) / np.sqrt(2))


def lr_bounds(curve, max_divisor=LRMAX_DIVISOR, descent_fraction=0.1):
    """LRMIN and LRMAX from a range test's usable curve (lr, smoothed loss, batch loss): the rule
    in LR_RULE."""
    if len(curve) < 2:  # usable_curve cut it at its first NaN: the loss was not finite from the start
        raise UsageError("the LR range test's loss was not a finite number from its first iterations: it found no LR "
                         "that trains; check the data and --wd, or give --lr-max and --lr-min")
    lrs, losses = curve.lr.to_numpy(), curve.loss.to_numpy()
    lowest = int(np.argmin(losses))
    fall, noise = losses[0] - losses[lowest], batch_noise(curve.batch_loss)
    if not fall > NOISE_MULTIPLE * noise:
        raise UsageError(f"the LR range test's loss fell by {fall:.3g}, within its noise ({NOISE_MULTIPLE} x "
                         f"{noise:.3g}, the spread of one batch's loss): it found no LR that trains; check the data, "
                         "or give --lr-max and --lr-min")
    lr_max = lrs[lowest] / max_divisor
    fallen = losses[: lowest + 1] <= losses[0] - descent_fraction * fall
    lr_min = min(lrs[int(np.argmax(fallen))], lr_max / max_divisor)
    return float(lr_min), float(lr_max)


def usable_curve(curve, num_it):
    """Drop what fastai's own suggestions drop: the first 10% (the smoothed loss is still
    warming up) and the last five points (divergence), and anything from the first NaN on."""
    if len(curve) - 5 - num_it // 10 >= 3:
        curve = curve.iloc[num_it // 10: len(curve) - 5]
    finite = np.isfinite(curve.loss.to_numpy())
    return curve.iloc[: len(curve) if finite.all() else int(np.argmin(finite))]


def find_lr(learn, run_dir, num_it):
    """Run fastai's lr_find for `num_it` iterations (it cycles the training set as often as that
    takes) and write lr_find.csv, lr_find.png and lr_find.json."""
    print(f"LR range test: {num_it} iterations, LR {FINDER_START_LR:g} to {FINDER_END_LR:g}", flush=True)
    batch_losses = BatchLosses()
    try:
        with showing_range_test(learn, num_it), learn.added_cbs(batch_losses):
            learn.lr_find(start_lr=FINDER_START_LR, end_lr=FINDER_END_LR, num_it=num_it, show_plot=False,
                          suggest_funcs=None)
    finally:  # lr_find parks the weights there, and leaves them if it is interrupted
        shutil.rmtree(run_dir / learn.model_dir, ignore_errors=True)
    curve = pd.DataFrame({"lr": learn.recorder.lrs, "loss": torch.stack(learn.recorder.losses).tolist(),
                          "batch_loss": torch.stack(batch_losses.losses).tolist()})
    learn.recorder.losses = list(curve.loss)  # on the host, as fastai's own Recorder keeps them: its plot reads them
    write_csv(run_dir / LR_FIND_CSV, curve)
    lr_min, lr_max = lr_bounds(usable_curve(curve, num_it))
    plot_lr_find(learn, run_dir, curve, lr_min, lr_max)
    stopped = stop_reason(len(curve), num_it)
    write_lr_find(run_dir, {"lr_min": lr_min, "lr_max": lr_max, "rule": LR_RULE, "iterations": len(curve),
                            "iterations_asked": num_it, "stopped": stopped, "start_lr": FINDER_START_LR,
                            "end_lr": FINDER_END_LR})
    print_line(learn, f"LR range test: stopped {stopped}; LRMIN = {lr_min:.3e}, LRMAX = {lr_max:.3e}")
    return lr_min, lr_max


def stop_reason(iterations, asked):
    """When the range test stopped, `iterations` into the `asked`: fastai's LRFinder stops early
    only where the smoothed loss has passed 4 times its lowest (stop_div)."""
    if iterations >= asked:
        return f"after its {asked} iterations"
    return f"at iteration {iterations} of {asked}, where the loss diverged (past 4 times its lowest, fastai's stop)"


def plot_lr_find(learn, run_dir, curve, lr_min, lr_max):
    def loss_at(lr):
        return float(np.interp(np.log(lr), np.log(curve.lr), curve.loss))

    learn.recorder.plot_lr_find(suggestions=[(lr_min, loss_at(lr_min)), (lr_max, loss_at(lr_max))],
                                nms=[f"LRMIN {lr_min:.2e}", f"LRMAX {lr_max:.2e}"])
    fig = plt.gcf()
    fig.axes[0].set_title(f"LR range test ({len(curve)} iterations)")
    save_figure(fig, run_dir / LR_FIND_PNG)


def one_cycle(lr_min, lr_max, peak_epoch, epochs):
    """fit_one_cycle's arguments for LRMIN -> LRMAX at `peak_epoch` -> LRMIN. fastai starts at
    lr_max/div and ends at lr_max/div_final, so both divisors are LRMAX/LRMIN ("no
    annihilation": the LR never goes below LRMIN)."""
    div = lr_max / lr_min
    return dict(n_epoch=epochs, lr_max=lr_max, div=div, div_final=div, pct_start=peak_epoch / epochs)
