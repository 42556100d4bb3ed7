import numpy as np
import pytest
from fastai.test_utils import synth_learner

from lr_schedule import lr_bounds, one_cycle
from settings import UsageError


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


def test_lr_rule_on_a_range_test_curve():
    lrs = np.logspace(-7, 1, 81)  # ten points a decade
    # Flat until 1e-5, falling to its lowest point at 1e-2, then diverging.
    losses = np.interp(np.log10(lrs), [-7, -5, -2, 1], [2.3, 2.3, 1.3, 9.0])
    lr_min, lr_max = lr_bounds(lrs, losses)
    assert lr_max == pytest.approx(1e-3)
    assert lr_min == pytest.approx(lrs[np.argmax(losses <= 2.2)])  # 10% of the fall of 1.0
    assert 1e-5 < lr_min < 1e-4


def test_lr_rule_keeps_lrmin_a_decade_below_lrmax():
    lrs = np.logspace(-7, 1, 81)
    losses = np.interp(np.log10(lrs), [-7, -2.5, -2, 1], [2.3, 2.3, 1.3, 9.0])  # a short, late fall
    lr_min, lr_max = lr_bounds(lrs, losses)
    assert lr_min == pytest.approx(lr_max / 10)


def test_lr_rule_refuses_a_curve_that_never_falls():
    lrs = np.logspace(-7, 1, 81)
    with pytest.raises(UsageError, match="no fall in the loss"):
        lr_bounds(lrs, np.linspace(2.3, 5, 81))
