import errno
import os
import re

import pytest
import torch
from fastai.test_utils import synth_learner
from fastai.vision.all import Callback, CrossEntropyLossFlat, DataLoaders, Learner

from cifar10_fast.data.loaders import cifar10_dataloaders
from cifar10_fast.training.callbacks import HistoryLogger, LastTestPass, TimeToAccuracy, flip_tta_accuracy
from customresnet import CustomResNet
from tests.conftest import train


def test_time_to_accuracy_records_each_milestone_once_and_stops_at_the_target():
    per_epoch = [0.5, 0.91, 0.92, 0.935, 0.95, 0.96]

    def accuracy(pred, targ):  # the accuracy this test scripts for each epoch
        return torch.tensor(per_epoch[learn.epoch])

    for target, epochs_run in ((None, 6), (0.93, 4)):
        learn = synth_learner(n_trn=8, metrics=accuracy)
        timer = TimeToAccuracy(target=target)
        with learn.no_bar(), learn.no_logging():
            learn.fit(6, lr=1e-3, cbs=[timer])
        results = timer.results()
        assert len(learn.recorder.values) == epochs_run
        assert results["stopped_early"] == (target is not None)
        assert results["first_epoch_90"] == 2 and results["first_epoch_93"] == 4
        assert results["first_epoch_94"] == (5 if target is None else None)
        assert 0 < results["seconds_to_90"] <= results["seconds_to_93"]


class HalvesModel(torch.nn.Module):
    """Logits (mean of the left half, 2 x mean of the right half): not mirror-symmetric."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))  # fastai reads the device off a parameter

    def forward(self, x):
        return self.scale * torch.stack([x[..., :2].mean((1, 2, 3)), 2 * x[..., 2:].mean((1, 2, 3))], 1)


def test_flip_tta_averages_each_image_with_its_mirror():
    # Left half bright, label 1: the image alone says 0 (softmax 0.73 / 0.27), its mirror says 1
    # (0.12 / 0.88), and their average says 1.
    image = torch.zeros(3, 4, 4)
    image[..., :2] = 1
    items = [(image, torch.tensor(1))] * 4
    dls = DataLoaders.from_dsets(items, items, bs=2, device="cpu")
    learn = Learner(dls, HalvesModel(), loss_func=CrossEntropyLossFlat())
    probs, targets = learn.get_preds(dl=dls.valid)
    assert (probs.argmax(1) == 0).all()
    assert flip_tta_accuracy(learn, probs, targets) == 1.0


def test_the_last_test_pass_gives_the_predictions_get_preds_would(tiny_folder):
    """In the test set's order, as fastai's get_preds gives them (probabilities, targets, each image's
    loss); a fit that tested no whole test set leaves them to one pass of get_preds."""
    dls, _ = cifar10_dataloaders(tiny_folder, bs=16, device="cpu", seed=0)
    learn = Learner(dls, CustomResNet(width=8), loss_func=CrossEntropyLossFlat(label_smoothing=0.2))
    last_test_pass = LastTestPass()
    assert all(torch.equal(a, b) for a, b in zip(last_test_pass.predictions(learn), learn.get_preds(with_loss=True)))
    with learn.no_logging(), learn.no_bar():
        learn.fit(2, lr=1e-2, cbs=[last_test_pass])
    assert sum(map(len, last_test_pass.outputs)) == len(dls.valid_ds)  # the second epoch's pass only
    expected = learn.get_preds(dl=dls.valid, with_loss=True)
    for kept, passed in zip(last_test_pass.predictions(learn), expected):
        assert kept.device.type == "cpu" and kept.shape == passed.shape
        assert torch.allclose(kept, passed, atol=1e-6)


def test_a_diverging_loss_stops_the_run_naming_the_lr(tmp_path, tiny_folder, capsys):
    with pytest.raises(SystemExit) as e:
        # --wd 0: with the recipe's 0.01, LR x wd >= 1 is refused before the run (settings.wd_problem)
        train(tiny_folder, tmp_path / "runs", "--lr-min", 10, "--lr-max", 1000, "--wd", 0, "--epochs", 2,
              "--name", "hot")
    assert e.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "the loss diverged" in message and "LR is likely too high" in message
    assert 10 <= float(re.search(r"LRs up to ([0-9.e+-]+):", message).group(1)) <= 1000
    run_dir, = (tmp_path / "runs").iterdir()
    assert (run_dir / "config.json").is_file() and (run_dir / "history.csv").is_file()


def test_time_to_accuracy_takes_back_what_a_done_fit_reached():
    """A fit resumed after its end trains nothing; its milestones and early stop are the ones it saved."""
    def accuracy(pred, targ):
        return torch.tensor(0.95)

    learn = synth_learner(n_trn=8, metrics=accuracy)
    done = TimeToAccuracy(target=0.9)
    with learn.no_bar(), learn.no_logging():
        learn.fit(3, lr=1e-3, cbs=[done])
    resumed = TimeToAccuracy(target=0.9, resumed={"epochs_done": 1, "time_to_accuracy": done.state()})
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, lr=1e-3, cbs=[resumed], start_epoch=1)
    assert resumed.results() == done.results() and done.results()["stopped_early"]


class FullDisk:
    def write(self, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_under_the_history_names_history_csv(tmp_path):
    logger = HistoryLogger([])

    class DiskFills(Callback):
        order = logger.order + 1

        def before_fit(self):
            logger.file.close()
            logger.file = FullDisk()

    learn = synth_learner(n_trn=8, path=tmp_path)
    with pytest.raises(OSError) as e, learn.no_bar():
        learn.fit(1, lr=1e-3, cbs=[logger, DiskFills()])
    assert (e.value.errno, e.value.filename) == (errno.ENOSPC, str(tmp_path / "history.csv"))
