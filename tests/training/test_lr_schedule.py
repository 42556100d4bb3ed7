from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastai.test_utils import synth_learner

from cifar10_fast.core.config import FINDER_END_LR, FINDER_ITERS_MIN, FINDER_START_LR, UsageError
from cifar10_fast.core.files import figures_to_files
from cifar10_fast.training import lr_schedule
from cifar10_fast.training.lr_schedule import lr_bounds, one_cycle, usable_curve


def test_one_cycle_goes_lrmin_to_lrmax_at_the_peak_and_back_never_lower():
    lr_min, lr_max, epochs, peak_epoch = 1e-4, 1e-2, 24, 5
    per_epoch = 20
    learn = synth_learner(n_trn=per_epoch)
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(**one_cycle(lr_min, lr_max, peak_epoch, epochs))
    lrs = np.array(learn.recorder.hps["lr"])
    peak = per_epoch * peak_epoch  # the first step after epoch 5: 5/24 of the run
    assert len(lrs) == per_epoch * epochs
    assert lrs[0] == pytest.approx(lr_min, rel=1e-6)
    assert lrs[peak] == pytest.approx(lr_max, rel=1e-6) and lrs.argmax() == peak
    assert lrs[-1] == pytest.approx(lr_min, rel=0.01)
    assert lrs.min() >= lr_min * (1 - 1e-9)
    assert (np.diff(lrs[: peak + 1]) > 0).all() and (np.diff(lrs[peak:]) <= 0).all()


def noiseless(lrs, losses):
    """A range test's curve on which each batch's loss is the smoothed loss."""
    return pd.DataFrame({"lr": lrs, "loss": losses, "batch_loss": losses})


def smoothed(batch_losses, beta=0.98):
    """fastai's smoothed loss (AvgSmoothLoss): a debiased exponential moving average."""
    average, out = 0.0, []
    for i, loss in enumerate(batch_losses, 1):
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta ** i))
    return np.array(out)


def test_lr_rule_on_a_range_test_curve():
    lrs = np.logspace(-7, 1, 81)  # ten points a decade
    # Flat until 1e-5, falling to its lowest point at 1e-2, then diverging.
    losses = np.interp(np.log10(lrs), [-7, -5, -2, 1], [2.3, 2.3, 1.3, 9.0])
    lr_min, lr_max = lr_bounds(noiseless(lrs, losses))
    assert lr_max == pytest.approx(1e-3)
    assert lr_min == pytest.approx(lrs[np.argmax(losses <= 2.2)])  # 10% of the fall of 1.0
    assert 1e-5 < lr_min < 1e-4


def test_lr_rule_keeps_lrmin_a_decade_below_lrmax():
    lrs = np.logspace(-7, 1, 81)
    losses = np.interp(np.log10(lrs), [-7, -2.5, -2, 1], [2.3, 2.3, 1.3, 9.0])  # a short, late fall
    lr_min, lr_max = lr_bounds(noiseless(lrs, losses))
    assert lr_min == pytest.approx(lr_max / 10)


def test_lr_rule_refuses_a_curve_that_never_falls():
    lrs = np.logspace(-7, 1, 81)
    with pytest.raises(UsageError, match="loss fell by 0,"):
        lr_bounds(noiseless(lrs, np.linspace(2.3, 5, 81)))


def test_lr_rule_refuses_a_curve_that_is_not_finite_from_its_start():
    """Issue 17: --wd 1e308 made the loss NaN at once; usable_curve left nothing, and np.argmin failed."""
    lrs = np.logspace(-7, 1, 100)
    curve = noiseless(lrs, np.full(100, np.nan))
    with pytest.raises(UsageError, match="not a finite number from its first iterations"):
        lr_bounds(usable_curve(curve, 100))


def test_lr_rule_refuses_a_flat_noisy_curve():
    """Noise alone: the smoothed loss wanders, and its lowest point, anywhere, would give LRs
    (without the check: LRMIN 2.0e-8 and LRMAX 2.0e-7 on this one)."""
    batch_losses = 2.3 + np.random.default_rng(0).normal(0, 0.1, 100)
    curve = pd.DataFrame({"lr": np.logspace(-7, 1, 100), "loss": smoothed(batch_losses), "batch_loss": batch_losses})
    with pytest.raises(UsageError, match=r"within its noise \(2 x .*give --lr-max and --lr-min"):
        lr_bounds(usable_curve(curve, 100))


def test_lr_rule_reads_a_real_cifar10_curve():
    """lr_find.csv of `train_fastai.py --find-lr --subset 5000 --width 16 --bs 128` on the JPEG copy
    of CIFAR-10 (CPU): the loss falls from 3.1 to 2.4, 6.7 times the noise of one batch's loss."""
    curve = pd.read_csv(Path(__file__).with_name("lr_find_cifar10.csv"))
    assert list(curve.loss) == pytest.approx(smoothed(curve.batch_loss), rel=1e-4)  # fastai's smoothing
    lr_min, lr_max = lr_bounds(usable_curve(curve, 100))
    assert lr_min == pytest.approx(1.096e-4, rel=1e-3) and lr_max == pytest.approx(6.918e-3, rel=1e-3)


def usable_reach(num_it):
    """The highest LR in the usable curve of a range test of `num_it` iterations, as fastai's
    lr_find sweeps them."""
    learn = synth_learner()
    with learn.no_bar(), learn.no_logging():
        learn.lr_find(start_lr=FINDER_START_LR, end_lr=FINDER_END_LR, num_it=num_it, stop_div=False, show_plot=False,
                      suggest_funcs=None)
    lrs = learn.recorder.lrs
    return usable_curve(pd.DataFrame({"lr": lrs, "loss": np.ones(len(lrs)), "batch_loss": np.ones(len(lrs))}),
                        num_it).lr.max()


def test_the_fewest_finder_iterations_are_those_whose_usable_curve_reaches_cifar10s_lowest_loss():
    """settings.FINDER_ITERS_MIN, derived: with one iteration fewer, the usable curve ends below the
    LR at which the real curve's smoothed loss is lowest (so the rule could only fail, or put
    LRMAX at the curve's end, while the loss still falls)."""
    real = usable_curve(pd.read_csv(Path(__file__).with_name("lr_find_cifar10.csv")), 100)
    lowest_loss_lr = real.lr.iloc[int(np.argmin(real.loss))]
    assert usable_reach(FINDER_ITERS_MIN - 1) < lowest_loss_lr <= usable_reach(FINDER_ITERS_MIN)


def test_the_range_tests_figure_shows_its_log_axis_as_powers_of_ten(tmp_path, monkeypatch):
    """The LR rule rests on this figure: each tick of its log axis is matplotlib's mathtext 10^n, a
    few characters wide, not the raw text $\\mathdefault{10^{-7}}$ (which it was while user text was
    made safe by turning mathtext off for all of matplotlib)."""
    figures_to_files()
    curve = pd.read_csv(Path(__file__).with_name("lr_find_cifar10.csv"))
    learn = synth_learner()
    learn.recorder.lrs, learn.recorder.losses = list(curve.lr), list(curve.loss)
    drawn = []
    monkeypatch.setattr(lr_schedule, "save_figure", lambda fig, path: drawn.append(fig))
    lr_schedule.plot_lr_find(learn, tmp_path, curve, 1e-4, 1e-3)
    figure, = drawn
    figure.canvas.draw()
    ticks = [label for label in figure.axes[0].get_xticklabels() if label.get_text()]
    assert ticks and all("mathdefault" in label.get_text() for label in ticks)
    widths = [label.get_window_extent().width for label in ticks]
    assert max(widths) < 40, widths  # about 25 px as 10^-6; over 150 px as its raw text
