import re

import numpy as np
import torch
from fastai.interpret import ClassificationInterpretation
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat

from cifar10_fast.data.loaders import cifar10_dataloaders
from cifar10_fast.training.outputs import PredictedInterpretation, git_commit, new_run_dir
from customresnet import CustomResNet
from tests.conftest import REPO


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
    ours = PredictedInterpretation(learn, probs, targets, losses)
    fastais = ClassificationInterpretation.from_learner(learn)
    np.testing.assert_array_equal(ours.confusion_matrix(), fastais.confusion_matrix())
    assert ours.confusion_matrix().sum() == len(dls.valid_ds)
    assert torch.equal(ours.top_losses(5)[1], fastais.top_losses(5)[1])


def test_the_misclassified_figure_is_fastais_plot_top_losses_from_the_predictions_made(tiny_folder):
    """The images with the highest loss, in fastai.vision.learner's plot_top_losses order and titles,
    without loading that module (it loads torchvision) or passing those images through the model again."""
    import matplotlib.pyplot as plt
    dls, _ = cifar10_dataloaders(tiny_folder, bs=16, device="cpu", seed=0)
    torch.manual_seed(0)
    learn = Learner(dls, CustomResNet(width=8), loss_func=CrossEntropyLossFlat())
    probs, targets, losses = learn.get_preds(dl=dls.valid, with_loss=True)

    def drawn(interp):
        interp.plot_top_losses(5, nrows=1)
        figure = plt.gcf()
        plt.close(figure)
        return figure._suptitle.get_text(), [(ax.get_title(), ax.images[0].get_array()) for ax in figure.axes]

    ours = drawn(PredictedInterpretation(learn, probs, targets, losses))
    import fastai.vision.learner  # noqa: F401  fastai's plot_top_losses for images
    fastais = drawn(ClassificationInterpretation.from_learner(learn))
    assert ours[0] == fastais[0] and len(ours[1]) == len(fastais[1]) == 5
    for (our_title, our_image), (fastai_title, fastai_image) in zip(ours[1], fastais[1]):
        assert our_title == fastai_title
        # fastai's: the normalised batch decoded back to uint8, its rounding errors truncated
        np.testing.assert_allclose(np.asarray(our_image, dtype=int), np.asarray(fastai_image, dtype=int), atol=1)
