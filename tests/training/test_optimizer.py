"""FusedAdamW against fastai's Adam as the Learner runs it (opt_func=Adam, wd=0.01)."""
import copy
import io
import sys
import warnings

import pytest
import torch
import torch.nn as nn
from fastai.learner import load_model, save_model
from fastai.optimizer import OptimWrapper
from fastai.vision.all import Adam, Callback, CrossEntropyLossFlat, DataLoader, DataLoaders, Learner, norm_bias_params

from cifar10_fast.core.run_folder import EXPORT_PICKLE
from cifar10_fast.training.optimizer import FusedAdamW
from customresnet import CustomResNet

STEPS, BS, WD = 20, 8, 0.01


@pytest.fixture(scope="module")
def dls():
    """STEPS training batches and one test batch of random images, served in a fixed order."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn((STEPS + 1) * BS, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, ((STEPS + 1) * BS,), generator=generator)
    items = list(zip(images, labels))
    return DataLoaders(DataLoader(items[:-BS], bs=BS), DataLoader(items[-BS:], bs=BS), device="cpu")


@pytest.fixture(scope="module")
def thin_resnet():
    torch.manual_seed(0)
    return CustomResNet(width=8)


def learner(dls, model, opt_func):
    return Learner(dls, copy.deepcopy(model), loss_func=CrossEntropyLossFlat(), opt_func=opt_func, wd=WD)


def relative_difference(a, b):
    return ((a - b).norm() / a.norm()).item()


class FusedAlongside(Callback):
    """At every step of a fit with fastai's Adam, FusedAdamW takes a step from the same weights
    with the same gradient, on a copy of the weights, with the hyperparameters the Learner sets
    (lr and mom as fit_one_cycle schedules them, wd, which parameters decay) and its own for the
    rest; records how far apart the two steps land, relative to the step's size."""

    def before_fit(self):
        self.copies = [p.detach().clone() for p in self.model.parameters()]
        self.fused = FusedAdamW(self.copies, lr=0)
        for copy_, p in zip(self.copies, self.model.parameters()):
            self.fused.state[copy_]["do_wd"] = self.opt.state[p].get("do_wd", True)
        self.differences = []

    def before_step(self):
        for copy_, p in zip(self.copies, self.model.parameters()):
            copy_.data.copy_(p.data)
            copy_.grad = p.grad.clone()
        self.before = [p.detach().clone() for p in self.model.parameters()]
        self.fused.set_hypers(**{name: float(self.opt.hypers[-1][name]) for name in ("lr", "mom", "wd")})
        self.fused.step()

    def after_step(self):
        self.differences.append(max(relative_difference(p - before, copy_ - before)
                                    for p, copy_, before in zip(self.model.parameters(), self.copies, self.before)))


def test_one_cycle_takes_fastai_adams_steps(dls, thin_resnet):
    """fit_one_cycle changes the LR and beta1 at every step; FusedAdamW follows them and steps as
    fastai's Adam does. Compared step by step from the same weights: over a whole fit, rounding
    differences (which differ from CPU to CPU) grow without bound where Adam divides a gradient
    near zero by its own size, and trajectories part whichever optimizer is right."""
    fused, reference = learner(dls, thin_resnet, FusedAdamW), learner(dls, thin_resnet, Adam)
    alongside = FusedAlongside()
    fused.fit_one_cycle(1, lr_max=4e-3)
    reference.fit_one_cycle(1, lr_max=4e-3, cbs=alongside)
    assert len(fused.recorder.hps["lr"]) == STEPS
    for hp in ("lr", "mom"):
        assert fused.recorder.hps[hp] == pytest.approx(reference.recorder.hps[hp])
    assert max(fused.recorder.hps["mom"]) > 0.94 and min(fused.recorder.hps["mom"]) < 0.86
    # A weight near 1 moved by an LR of 1.6e-4 has its step in float32 to about 1e-3: the bound.
    # Measured: 2e-5 at most; a wrong eps, beta2 or decay on BatchNorm weights makes 1.6e-2 or more.
    assert len(alongside.differences) == STEPS and max(alongside.differences) < 1e-3


def test_hypers_read_as_fastai_names_them(dls, thin_resnet):
    learn = learner(dls, thin_resnet, FusedAdamW)
    learn.fit_one_cycle(1, lr_max=4e-3)
    hypers, = learn.opt.hypers
    assert hypers["lr"] == learn.recorder.hps["lr"][-1] and hypers["mom"] == learn.recorder.hps["mom"][-1]
    assert (hypers["sqr_mom"], hypers["eps"], hypers["wd"]) == (0.99, 1e-5, WD)


def decayed_tensors(learn, lr=0.1):
    """Names of the parameters that one step with zero gradients changes: with no gradient Adam
    moves nothing, so what changes is weight decay (of parameters made nonzero first)."""
    for p in learn.model.parameters():
        nn.init.uniform_(p, 1, 2)
        p.grad = torch.zeros_like(p)
    learn.create_opt()
    learn.opt.set_hypers(wd=WD, lr=lr)  # what Learner.fit does
    before = {name: p.detach().clone() for name, p in learn.model.named_parameters()}
    learn.opt.step()
    decayed = set()
    for name, p in learn.model.named_parameters():
        if torch.equal(p, before[name] * (1 - lr * WD)):
            decayed.add(name)
        else:
            assert torch.equal(p, before[name]), name
    return decayed


def test_weight_decay_falls_on_conv_and_linear_weights_only(dls, thin_resnet):
    weights = {f"{name}.weight" for name, m in thin_resnet.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert decayed_tensors(learner(dls, thin_resnet, FusedAdamW)) == weights
    assert decayed_tensors(learner(dls, thin_resnet, Adam)) == weights
    names = {p: name for name, p in thin_resnet.named_parameters()}
    assert {names[p] for p in norm_bias_params(thin_resnet)} == set(names.values()) - weights


def resumed_learner(dls, learn, checkpoint):
    """A new Learner with FusedAdamW, resumed from `learn` as a checkpoint resumes a run: its weights
    and optimizer state written by save_model and read by load_model."""
    save_model(checkpoint, learn.model, learn.opt)
    resumed = learner(dls, CustomResNet(width=8), FusedAdamW)
    resumed.create_opt()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "Could not load the optimizer state")  # fastai only warns
        load_model(checkpoint, resumed.model, resumed.opt)
    return resumed


def assert_fit_on_alike(learn, resumed):
    """One more epoch on each leaves the same weights."""
    for learn_ in (learn, resumed):
        learn_.fit(1, lr=1e-3)
    for a, b in zip(learn.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


def test_optimizer_state_survives_fastai_save_model_and_load_model(dls, thin_resnet, tmp_path):
    """What a checkpoint does: a deep copy of the state, written by save_model, read by load_model."""
    learn = learner(dls, thin_resnet, FusedAdamW)
    learn.fit_one_cycle(1, lr_max=4e-3)
    saved = copy.deepcopy(learn.opt.state_dict())
    resumed = resumed_learner(dls, learn, tmp_path / "checkpoint.pth")
    loaded = resumed.opt.state_dict()
    assert list(loaded["hypers"]) == list(saved["hypers"])
    assert len(loaded["state"]) == len(saved["state"]) == len(list(learn.model.parameters()))
    for before, after in zip(saved["state"], loaded["state"]):
        assert before.keys() == after.keys() and {"grad_avg", "sqr_avg", "step"} <= before.keys()
        for key, value in before.items():
            assert torch.equal(after[key], value) if torch.is_tensor(value) else after[key] == value, key
    assert_fit_on_alike(learn, resumed)


def test_lr_find_runs_and_restores_the_weights(dls, thin_resnet):
    learn = learner(dls, thin_resnet, FusedAdamW)
    learn.lr_find(start_lr=1e-5, end_lr=1e-1, num_it=10, show_plot=False)
    lrs = learn.recorder.lrs
    assert len(lrs) == 10 and lrs[0] == pytest.approx(1e-5)
    assert [b / a for a, b in zip(lrs, lrs[1:])] == pytest.approx([10 ** 0.4] * 9)  # 4 decades in 10 steps
    for a, b in zip(learn.model.parameters(), thin_resnet.parameters()):
        assert torch.equal(a, b)


def test_a_fit_runs_without_torch_dynamo(dls, thin_resnet, monkeypatch):
    """Every torch.optim optimizer imports torch._dynamo, which an eager run does not use and which
    takes 2 s of every run on 2 cores; a fit with FusedAdamW, its range test and its checkpoint
    do without it."""
    monkeypatch.setitem(sys.modules, "torch._dynamo", None)  # importing it now raises ImportError
    learn = learner(dls, thin_resnet, FusedAdamW)
    learn.lr_find(start_lr=1e-5, end_lr=1e-1, num_it=5, show_plot=False)
    learn.fit_one_cycle(1, lr_max=4e-3)
    copy.deepcopy(learn.opt.state_dict())


def test_an_export_made_before_fused_adamw_was_a_class_still_finds_its_optimizer():
    """A run's export.pkl names its opt_func by module and name; those made before FusedAdamW name
    `optimizer.fused_adamw`, which must still resolve for `predict.py --pickle` to load them."""
    assert EXPORT_PICKLE.Unpickler(io.BytesIO(b"coptimizer\nfused_adamw\n.")).load() is FusedAdamW


class NoDecayGroupWrapper(OptimWrapper):
    """The recipe's optimizer as it was before FusedAdamW (ccda85b's optimizer.py): fastai's
    OptimWrapper around torch's fused AdamW, weight decay in its second group alone."""

    def _set_hyper(self, k, v):
        if k == "wd":
            v = [0.0, *v[1:]]
        super()._set_hyper(k, v)


def torch_adamw(params, lr, mom=0.9, sqr_mom=0.99, eps=1e-5, wd=0.01):
    params = list(params)
    groups = [{"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
              {"params": [p for p in params if p.ndim > 1], "weight_decay": wd}]
    return NoDecayGroupWrapper(opt=torch.optim.AdamW(groups, lr=lr, betas=(mom, sqr_mom), eps=eps, fused=True))


def test_a_checkpoint_written_before_fused_adamw_resumes_as_if_never_stopped(dls, thin_resnet, tmp_path):
    """A run interrupted before FusedAdamW has torch AdamW's state in its checkpoint: it loads into
    FusedAdamW, and the fit goes on with the very steps the old optimizer would have taken."""
    before = learner(dls, thin_resnet, torch_adamw)
    before.fit_one_cycle(1, lr_max=4e-3)
    assert_fit_on_alike(before, resumed_learner(dls, before, tmp_path / "checkpoint.pth"))
