import re

import numpy as np
import torch
from fastai.interpret import ClassificationInterpretation
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat

from conftest import REPO
from customresnet import CustomResNet
from data import cifar10_dataloaders
from outputs import PredictedInterpretation, git_commit, new_run_dir


def test_run_folders_are_never_reused(tmp_path):
    first, second = new_run_dir(tmp_path, "same"), new_run_dir(tmp_path, "same")
    assert first != second and first.is_dir() and second.is_dir()


def test_git_commit_is_none_outside_a_git_checkout(tmp_path):
    assert git_commit(tmp_path) is None
    commit = git_commit(REPO)
    assert commit is None or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", commit)


def test_the_interpretation_counts_the_predictions_it_is_given(tiny_folder):
    """The confusion matrix and the top losses of fastai's ClassificationInterpretation, from the
    predictions the run already has instead of two more passes over the test set."""
    dls, _ = cifar10_dataloaders(tiny_folder, bs=16, device="cpu", seed=0)
    torch.manual_seed(0)
    learn = Learner(dls, CustomResNet(width=8), loss_func=CrossEntropyLossFlat())
    probs, targets, losses = learn.get_preds(dl=dls.valid, with_loss=True)
    ours, fastais = PredictedInterpretation(learn, probs, targets, losses), ClassificationInterpretation.from_learner(learn)
    np.testing.assert_array_equal(ours.confusion_matrix(), fastais.confusion_matrix())
    assert ours.confusion_matrix().sum() == len(dls.valid_ds)
    assert torch.equal(ours.top_losses(5)[1], fastais.top_losses(5)[1])
