"""The recipe's optimizer: fastai's Adam with decoupled weight decay, each step taken by torch's
fused AdamW kernel.

fastai's `Adam` steps each parameter tensor in a Python loop of several small operations (on a
GPU, a kernel launch each); torch's fused AdamW updates every tensor of a group in one kernel.
The two compute the same update (decoupled weight decay, then Adam with bias correction from the
current betas). `FusedAdamW` is a fastai `Optimizer`, so everything fastai does with its own
Adam holds as it is:

- the hyperparameters are fastai's (`lr`, `mom`, `sqr_mom`, `eps`, `wd`, with Adam's defaults eps
  1e-5 and beta2 0.99), which `fit_one_cycle` schedules and the recorder reads;
- weight decay spares the parameters the Learner marks `do_wd=False` (BatchNorm weights and every
  bias, with its default `wd_bn_bias=False`);
- its state (`grad_avg`, `sqr_avg`, `step` per parameter) is saved and loaded by fastai's
  `save_model`/`load_model`, as a checkpoint does.

It calls torch's functional `adamw`, not a `torch.optim.AdamW`: every `torch.optim.Optimizer`
loads torch._dynamo (its constructor and its `step` ask it to stay out of the way), which an eager
run never uses: 2.25 s on 2 cores (bench/results/latency-amd-epyc-2026-12-01-3.json: `import
torch` 3.09 s, and with its first optimizer 5.34 s).
"""
import torch
from fastai.optimizer import Optimizer
from torch.optim.adamw import adamw


class FusedAdamW(Optimizer):
    """fastai's `Adam(params, lr, mom, sqr_mom, eps, wd)` (decoupled weight decay) as a fastai
    `opt_func`; each step is one fused kernel per group of parameters that share their
    hyperparameters and whether they decay."""

    def __init__(self, params, lr, mom=0.9, sqr_mom=0.99, eps=1e-5, wd=0.01):
        super().__init__(params, cbs=[], lr=lr, mom=mom, sqr_mom=sqr_mom, eps=eps, wd=wd)

    def moments(self, p):
        """The parameter's Adam state, made at its first step where the parameter is, in its
        memory layout (channels-last on a GPU); the step count is a tensor there too, as the fused
        kernel reads it."""
        state = self.state[p]
        if "step" not in state:
            state.update(grad_avg=torch.zeros_like(p, memory_format=torch.preserve_format),
                         sqr_avg=torch.zeros_like(p, memory_format=torch.preserve_format),
                         step=torch.zeros((), dtype=torch.float32, device=p.device))
        return state

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise NotImplementedError("fastai optimizers do not take a closure")
        for params, hyper in zip(self.param_lists, self.hypers):
            with_grad = [p for p in params if p.grad is not None]
            for decays in (False, True):
                group = [p for p in with_grad if self.state[p].get("do_wd", True) == decays]
                if group:
                    self.fused_step(group, hyper, weight_decay=hyper["wd"] if decays else 0.0)

    def fused_step(self, params, hyper, weight_decay):
        states = [self.moments(p) for p in params]
        adamw(params=params, grads=[p.grad for p in params], exp_avgs=[s["grad_avg"] for s in states],
              exp_avg_sqs=[s["sqr_avg"] for s in states], max_exp_avg_sqs=[], state_steps=[s["step"] for s in states],
              fused=True, amsgrad=False, maximize=False, beta1=hyper["mom"], beta2=hyper["sqr_mom"], lr=hyper["lr"],
              eps=hyper["eps"], weight_decay=weight_decay)

    def load_state_dict(self, state_dict):
        """fastai's state dict, or the torch AdamW's that checkpoints written before FusedAdamW hold."""
        if "param_groups" in state_dict:
            state_dict = from_torch_adamw(state_dict, list(self.all_params().itemgot(0)))
        super().load_state_dict(state_dict)

    def zero_grad(self):
        """Gradients to None, as torch's optimizers do: no memset of every gradient each step, and
        the next backward writes them fresh."""
        for params in self.param_lists:
            for p in params:
                p.grad = None


def from_torch_adamw(state_dict, params):
    """FusedAdamW's state dict for `params` from that of the torch AdamW the recipe stepped with
    before it (through fastai's OptimWrapper): two groups, the parameters without weight decay
    (BatchNorm weights and biases, 1-D) then those with it, each in the model's order; a
    parameter's state under its index in them, its moments named as torch names them."""
    order = [p for p in params if p.ndim <= 1] + [p for p in params if p.ndim > 1]
    indices = [index for group in state_dict["param_groups"] for index in group["params"]]
    if len(indices) != len(order):
        raise ValueError(f"a state for {len(indices)} parameters, not {len(order)}")
    saved = {id(p): state_dict["state"].get(index) for index, p in zip(indices, order)}
    state = []
    for p in params:
        moments = saved[id(p)]  # None before the parameter's first step
        state.append({"do_wd": p.ndim > 1} if moments is None else
                     {"do_wd": p.ndim > 1, "grad_avg": moments["exp_avg"], "sqr_avg": moments["exp_avg_sq"],
                      "step": moments["step"]})
    decay = state_dict["param_groups"][-1]
    mom, sqr_mom = decay["betas"]
    return {"state": state, "hypers": [dict(lr=decay["lr"], mom=mom, sqr_mom=sqr_mom, eps=decay["eps"],
                                            wd=decay["weight_decay"])]}


# What the learners exported before FusedAdamW (a run's export.pkl) name as their optimizer: the
# name resolves to it, so that `predict.py --pickle` still loads them.
fused_adamw = FusedAdamW
