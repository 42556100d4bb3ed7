"""The LR range test, the rule that reads LRMIN and LRMAX off its curve, and the one-cycle
schedule they make."""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from files import save_figure, write_csv, write_json
from settings import UsageError

FINDER_START_LR, FINDER_END_LR = 1e-7, 10
LR_RULE = ("On fastai's smoothed lr_find loss: LRMAX = the LR of the lowest loss / 10; "
           "LRMIN = the first LR at which the loss has made 10% of its fall to that lowest point, "
           "capped at LRMAX / 10")


def lr_bounds(lrs, losses, max_divisor=10, descent_fraction=0.1):
    """LRMIN and LRMAX from a range test's smoothed loss curve (the rule in LR_RULE)."""
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    lowest = int(np.argmin(losses))
    if lowest == 0 or not losses[lowest] < losses[0]:
        raise UsageError("the LR range test found no fall in the loss; check the data, or give --lr-max and --lr-min")
    lr_max = lrs[lowest] / max_divisor
    fallen = losses[: lowest + 1] <= losses[0] - descent_fraction * (losses[0] - losses[lowest])
    lr_min = min(lrs[int(np.argmax(fallen))], lr_max / max_divisor)
    return float(lr_min), float(lr_max)


def usable_curve(lrs, losses, num_it):
    """Drop what fastai's own suggestions drop: the first 10% (the smoothed loss is still
    warming up) and the last five points (divergence), and anything from the first NaN on."""
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    keep = slice(num_it // 10, len(lrs) - 5) if len(lrs) - 5 - num_it // 10 >= 3 else slice(None)
    lrs, losses = lrs[keep], losses[keep]
    finite = np.isfinite(losses)
    end = len(losses) if finite.all() else int(np.argmin(finite))
    return lrs[:end], losses[:end]


def find_lr(learn, run_dir, num_it):
    """Run fastai's lr_find and write lr_find.csv, lr_find.png and lr_find.json."""
    learn.lr_find(start_lr=FINDER_START_LR, end_lr=FINDER_END_LR, num_it=num_it, show_plot=False,
                  suggest_funcs=None)
    lrs = [float(lr) for lr in learn.recorder.lrs]
    losses = [float(loss) for loss in learn.recorder.losses]
    write_csv(run_dir / "lr_find.csv", pd.DataFrame({"lr": lrs, "loss": losses}))
    (run_dir / learn.model_dir).rmdir()  # lr_find parks the weights there and leaves it empty
    lr_min, lr_max = lr_bounds(*usable_curve(lrs, losses, num_it))
    plot_lr_find(learn, run_dir, lrs, losses, lr_min, lr_max)
    write_json(run_dir / "lr_find.json", {"lr_min": lr_min, "lr_max": lr_max, "rule": LR_RULE,
                                          "iterations": num_it, "start_lr": FINDER_START_LR,
                                          "end_lr": FINDER_END_LR})
    print(f"LR range test: LRMIN = {lr_min:.3e}, LRMAX = {lr_max:.3e}")
    return lr_min, lr_max


def plot_lr_find(learn, run_dir, lrs, losses, lr_min, lr_max):
    def loss_at(lr):
        return float(np.interp(np.log(lr), np.log(lrs), losses))

    learn.recorder.plot_lr_find(suggestions=[(lr_min, loss_at(lr_min)), (lr_max, loss_at(lr_max))],
                                nms=[f"LRMIN {lr_min:.2e}", f"LRMAX {lr_max:.2e}"])
    fig = plt.gcf()
    fig.axes[0].set_title(f"LR range test ({len(lrs)} iterations)")
    save_figure(fig, run_dir / "lr_find.png")


def one_cycle(lr_min, lr_max, peak_epoch, epochs):
    """fit_one_cycle's arguments for LRMIN -> LRMAX at `peak_epoch` -> LRMIN. fastai starts at
    lr_max/div and ends at lr_max/div_final, so both divisors are LRMAX/LRMIN ("no
    annihilation": the LR never goes below LRMIN)."""
    div = lr_max / lr_min
    return dict(n_epoch=epochs, lr_max=lr_max, div=div, div_final=div, pct_start=peak_epoch / epochs)
