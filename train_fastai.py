"""Train the DAWNBench CustomResNet on CIFAR-10 with fastai, from LR range test to exported learner.

The recipe (Myrtle's "How to train your ResNet", as DAWNBench ran it):
    LR range test       LRMIN and LRMAX both found by `lr_find` (rule: `lr_bounds` below)
    one-cycle           24 epochs, LRMIN -> LRMAX at the end of epoch 5 -> LRMIN, never lower
    optimiser, loss     Adam, cross-entropy, batch size 512
    augmentation        [PadCrop(4, reflect), FlipLR, Cutout(8x8)] on training images only

    python train_fastai.py --find-lr        # the LR range test alone
    python train_fastai.py --epochs 24      # the recipe; runs the finder first unless given LRs
    python train_fastai.py --runs 5 --sweep lr_max=2e-3,4e-3   # 5 seeds of each point, compared

Every run writes a new folder <out>/<timestamp>[-name]/ and a row of <out>/index.csv; several runs
(--runs, --sweep) also write a group folder <out>/<timestamp>[-name]-group/ that summarises them.
See the README for each file.
"""
import argparse
import atexit
import copy
import itertools
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated")  # raised inside fastai's import

import matplotlib
matplotlib.use("Agg")  # files only; never open a window
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from fastai.distributed import DistributedDL
from fastai.learner import load_model
from fastai.vision.all import (Adam, CancelFitException, Callback, ClassificationInterpretation, CrossEntropyLossFlat,
                               CSVLogger, Learner, Recorder, accuracy, get_model, num_distrib, rank_distrib,
                               set_seed)
from safetensors.torch import save_file

import compare
from customresnet import CustomResNet, count_parameters
from data import DataError, cifar10_dataloaders, cifar10_folder
from files import atomic, save_figure
from report import write_report

FINDER_START_LR, FINDER_END_LR = 1e-7, 10
PEAK_FRACTION = 5 / 24  # the recipe peaks at the end of epoch 5 of 24
LR_RULE = ("On fastai's smoothed lr_find loss: LRMAX = the LR of the lowest loss / 10; "
           "LRMIN = the first LR at which the loss has made 10% of its fall to that lowest point, "
           "capped at LRMAX / 10")
ACCURACY_MILESTONES = (0.90, 0.93, 0.94)
# Values a flag left unset takes. "seed" is the spec's recipe. "fast" departs from it for the
# shortest time to 94%, with the tricks of Myrtle's "How to train your ResNet" that keep the
# network and optimiser: fewer epochs, label smoothing 0.2, flip test-time augmentation.
PRESETS = {
    "seed": dict(epochs=24, bs=512, wd=0.01, label_smoothing=0.0, tta=False),
    "fast": dict(epochs=10, bs=512, wd=0.01, label_smoothing=0.2, tta=True),
}
SWEEPABLE = dict(lr_max=float, lr_min=float, wd=float, epochs=int, peak_epoch=float, bs=int, width=int,
                 label_smoothing=float, subset=int, target_acc=float)


class UsageError(Exception):
    """A bad flag or setting, worded as one line that says what to do."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM during training, after the checkpoint is written: says how to resume."""


# What makes two runs the same run: a --resume must not change any of them.
RUN_SETTINGS = ("preset", "epochs", "peak_epoch", "bs", "lr_max", "lr_min", "wd", "label_smoothing", "seed", "aug",
                "subset", "width", "precision", "deterministic")
UNSET = object()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--find-lr", action="store_true",
                   help="run only the LR range test and write lr_find.csv/.png/.json")
    p.add_argument("--data", help="CIFAR-10 folder or .tgz (fastai layout or the python version); "
                                  "default: $CIFAR10_DATA, else fastai's download")
    p.add_argument("--preset", choices=list(PRESETS), default="seed",
                   help="seed: the spec's recipe (default); fast: a departure for the shortest time to 94%% "
                        "(see the README); flags given explicitly override the preset")
    p.add_argument("--epochs", type=int, help="training epochs (default: the preset's, 24 for seed)")
    p.add_argument("--peak-epoch", type=float,
                   help="the LR reaches LRMAX at the end of this epoch (default 5 of 24: 5/24 of the run)")
    p.add_argument("--bs", type=int, help="batch size (default: the preset's, 512)")
    p.add_argument("--lr-max", type=float, help="peak LR; default: found by the LR range test")
    p.add_argument("--lr-min", type=float, help="start and end LR; default: found by the LR range test")
    p.add_argument("--wd", type=float, help="decoupled weight decay of fastai's Adam, not on BatchNorm or biases "
                                            "(default: the preset's, 0.01)")
    p.add_argument("--label-smoothing", type=float,
                   help="label smoothing of the cross-entropy (default: the preset's, 0 for seed, 0.2 for fast)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction,
                   help="also evaluate the final model with flip averaging (the image and its mirror) "
                        "(default: the preset's, off for seed, on for fast)")
    p.add_argument("--target-acc", type=float,
                   help="stop at the end of the epoch whose test accuracy reaches this fraction, e.g. 0.94")
    p.add_argument("--runs", type=int, default=1,
                   help="train this many seeds (--seed, --seed+1, ...) of each configuration (default 1)")
    p.add_argument("--sweep", action="append", metavar="KEY=V1,V2,...",
                   help=f"train every combination of these values (repeatable); KEY is one of {', '.join(SWEEPABLE)}")
    p.add_argument("--seed", type=int, default=0, help="seed for every random generator (default 0)")
    p.add_argument("--out", default="runs", help="parent folder of run folders (default runs)")
    p.add_argument("--name", help="suffix for the run folder's name")
    p.add_argument("--aug", choices=["gpu", "albumentations"], default="gpu",
                   help="gpu: batch transforms on the data's device (default); "
                        "albumentations: per image on CPU DataLoader workers")
    p.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda, cuda:N")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="auto: bf16 mixed precision on a GPU that has it, fp16 on older GPUs, fp32 on CPU")
    p.add_argument("--subset", type=int, help="train on the first N training images (class-balanced), "
                                              "for quick runs; the test set stays whole")
    p.add_argument("--workers", type=int, help="DataLoader workers for --aug albumentations (default: all cores)")
    p.add_argument("--width", type=int, default=64,
                   help="channels of the first layer; 64 is the recipe, smaller is a thin copy for quick runs")
    p.add_argument("--finder-iters", type=int, default=100,
                   help="LR range test iterations (default 100; a training run uses at most its own length)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model (the first batches of the finder and of the first test pass "
                        "compile it); fastai's Learner still runs the loop")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic GPU kernels only (slower); a CPU run with a given --seed repeats anyway")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the interrupted run in RUN_DIR from its last finished epoch, with its settings")
    p.add_argument("--debug", action="store_true", help="on an error, show the traceback too")
    args = p.parse_args(argv)
    if args.resume:
        resume_settings(p, argv, args)
    for name, value in PRESETS[args.preset].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    try:
        points = sweep_grid(args.sweep)
    except UsageError as e:
        p.error(str(e))
    if args.find_lr and (args.runs > 1 or args.sweep):
        p.error("--find-lr runs the LR range test once: drop --runs and --sweep")
    if args.resume and (args.runs > 1 or args.sweep):
        p.error("--resume continues one run: drop --runs and --sweep")
    for point in points:
        for problem in invalid_settings(member(args, point)):
            p.error(problem)
    return args


def resume_settings(p, argv, args):
    """Take the run's settings from RUN_DIR/config.json; a flag given again must say the same."""
    run_dir = Path(args.resume)
    if not (run_dir / "checkpoint.json").is_file():
        p.error(f"{run_dir} holds no checkpoint.json: give the folder of an interrupted run")
    if args.find_lr:
        p.error("--find-lr and --resume do not go together: a finder run has nothing to resume")
    try:
        saved = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError) as e:
        p.error(f"{run_dir / 'config.json'} cannot be read ({type(e).__name__}): give the folder of an interrupted run")
    given = p.parse_args(argv, namespace=argparse.Namespace(**{key: UNSET for key in vars(args)}))
    for key in RUN_SETTINGS:
        value = getattr(given, key)
        if value is not UNSET and value != saved.get(key):
            p.error(f"{run_dir} was run with --{key.replace('_', '-')} {saved.get(key)}, not {value}: "
                    "drop the flag to resume it, or start a new run")
        setattr(args, key, saved.get(key, getattr(args, key)))  # a config from before a setting existed
    args.data = args.data or saved["data"]


def sweep_grid(sweeps):
    """Every combination of the --sweep KEY=V1,V2,... values, as [{key: value}]; [{}] without a sweep."""
    axes = {}
    for sweep in sweeps or []:
        key, _, values = sweep.partition("=")
        key = key.strip().replace("-", "_")
        if key not in SWEEPABLE:
            raise UsageError(f"--sweep {sweep}: {key or '(no key)'} cannot be swept; use KEY=V1,V2,... with KEY one "
                             f"of {', '.join(SWEEPABLE)}")
        if key in axes:
            raise UsageError(f"--sweep {key} is given twice: give all its values in one --sweep {key}=V1,V2,...")
        try:
            axes[key] = [SWEEPABLE[key](value) for value in values.split(",")]
        except ValueError:
            raise UsageError(f"--sweep {sweep}: the values of {key} must be {SWEEPABLE[key].__name__} numbers, "
                             "separated by commas") from None
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


def member(args, point, seed=None, group=None):
    """The settings of one run: `args` with a sweep point's values and a seed."""
    settings = argparse.Namespace(**{**vars(args), **point})
    settings.seed = args.seed if seed is None else seed
    if settings.peak_epoch is None:
        settings.peak_epoch = settings.epochs * PEAK_FRACTION
    settings.sweep_point = ",".join(f"{key}={value:g}" for key, value in point.items()) or None
    settings.group = group
    if group:
        settings.name = "-".join(filter(None, [args.name, settings.sweep_point, f"seed{settings.seed}"]))
    return settings


def invalid_settings(args):
    positive = dict(epochs=args.epochs, bs=args.bs, width=args.width, subset=args.subset,
                    lr_max=args.lr_max, lr_min=args.lr_min)
    for name, value in positive.items():
        if value is not None and not value > 0:
            yield f"--{name.replace('_', '-')} must be positive, not {value}"
    if not 0 < args.peak_epoch <= args.epochs:
        yield f"--peak-epoch must lie in (0, --epochs={args.epochs}], not {args.peak_epoch}"
    if args.lr_min and args.lr_max and args.lr_min >= args.lr_max:
        yield f"--lr-min ({args.lr_min}) must be below --lr-max ({args.lr_max})"
    if args.wd < 0:
        yield f"--wd must not be negative, not {args.wd}"
    if not 0 <= args.label_smoothing < 1:
        yield f"--label-smoothing must lie in [0, 1), not {args.label_smoothing}"
    if args.target_acc is not None and not 0 < args.target_acc <= 1:
        yield f"--target-acc is a fraction in (0, 1], e.g. 0.94, not {args.target_acc}"
    if args.runs < 1:
        yield f"--runs must be positive, not {args.runs}"
    if args.workers is not None and args.workers < 0:
        yield f"--workers must not be negative, not {args.workers}"
    if args.finder_iters < 10:
        yield f"--finder-iters must be at least 10, not {args.finder_iters}"


def resolve_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name} is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA GPU is visible here; use --device cpu")
    return device


def resolve_precision(precision, device):
    if device.type != "cuda":
        if precision in ("bf16", "fp16"):
            raise UsageError(f"--precision {precision} needs a CUDA GPU (fastai's mixed precision); use fp32 on {device}")
        return "fp32"
    if precision == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return precision


def seed_everything(seed, deterministic):
    """fastai's set_seed seeds Python, NumPy and torch (CPU and CUDA); the GPU augmentations draw
    from torch, the albumentations workers are reseeded from torch's per-worker seed. On the GPU,
    `deterministic` also makes cuDNN and every other kernel choose deterministic algorithms."""
    set_seed(seed, reproducible=deterministic)
    torch.backends.cudnn.benchmark = not deterministic  # autotuned convolutions, unless they must repeat
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to repeat itself
    torch.use_deterministic_algorithms(deterministic)


# ---------------------------------------------------------------------------------------------
# Several processes: `accelerate launch` (or torchrun) starts this script once per GPU.

def join_processes(device):
    """(number of processes, this process's device): 1 and `device` when run alone; under
    `accelerate launch` this process joins the others' group and takes its own GPU."""
    if num_distrib() <= 1:
        return 1, device
    state = PartialState(cpu=device.type == "cpu")
    if not state.is_main_process:
        sys.stdout = open(os.devnull, "w")  # one process tells the user what happens
    return state.num_processes, device if device.type == "cpu" else state.device  # accelerate says cpu:0


def broadcast_on_cpu_for_gloo(self, values, rank):
    """fastai's DistributedDL sends each epoch's sample order from rank 0 as a CUDA tensor, which
    NCCL needs; gloo (processes on CPUs) needs a CPU tensor."""
    on = "cuda" if torch.distributed.get_backend() == "nccl" else "cpu"
    values = torch.tensor(values, dtype=torch.long, device=on)
    torch.distributed.broadcast(values, rank)
    return values.cpu().tolist()


DistributedDL._broadcast = broadcast_on_cpu_for_gloo


@contextmanager
def as_if_alone():
    """fastai's lr_find reloads its weights behind a barrier that every process must reach; the
    range test runs in the main process only, so it runs as if no other process were there."""
    world_size = os.environ.pop("WORLD_SIZE", None)
    try:
        yield
    finally:
        if world_size is not None:
            os.environ["WORLD_SIZE"] = world_size


def output_folder(args, main_process):
    """The run folder. The other processes of a data-parallel run write into a throwaway folder,
    so that all run the same code and only the main process leaves files."""
    if not main_process:
        scratch = tempfile.mkdtemp(prefix="cifar10-fast-process-")
        atexit.register(shutil.rmtree, scratch, True)
        return Path(scratch)
    return Path(args.resume) if args.resume else new_run_dir(args.out, args.name)


def split_batches(learn, processes):
    """Each of the processes takes 1/processes of every batch: --bs stays the batch one
    optimizer step sees (the effective batch), so the recipe's LRs and the LR rule hold as they are."""
    if processes > 1:
        learn.dls.loaders = [dl.new(bs=dl.bs // processes) for dl in learn.dls.loaders]


def new_run_dir(out, name):
    """A new folder for this run; an existing one is never reused."""
    stem = datetime.now().strftime("%Y%m%d-%H%M%S") + (f"-{name}" if name else "")
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create --out {out} ({e.strerror}): choose a writable folder") from None
    for attempt in range(1, 1000):
        run_dir = Path(out) / (stem if attempt == 1 else f"{stem}-{attempt}")
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue
        except OSError as e:
            raise UsageError(f"cannot create {run_dir} ({e.strerror}): choose a writable --out") from None
    raise UsageError(f"too many runs named {stem} in {out}: choose another --name")


def write_json(path, obj):
    with atomic(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def write_csv(path, table):
    with atomic(path) as tmp:
        table.to_csv(tmp, index=False)


def make_learner(dls, args, run_dir, precision):
    model = CustomResNet(num_classes=len(dls.vocab), width=args.width)
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(label_smoothing=args.label_smoothing),
                    opt_func=Adam, metrics=accuracy,
                    wd=args.wd, path=run_dir)
    if dls.device.type == "cuda":
        learn.to_channelslast(use_amp=False)  # the convolutions' fast layout on tensor cores
        if precision == "bf16":
            learn.to_bf16()
        elif precision == "fp16":
            learn.to_fp16()
    if args.compile:
        learn.model = torch.compile(learn.model)
    return learn


def uncompiled(learn):
    """The plain module under a compiled one (the same parameters), so that the saved weights keep
    their names and the exported learner loads without the compiler."""
    learn.model = getattr(learn.model, "_orig_mod", learn.model)
    return learn


def library_versions():
    import albumentations
    import fastai
    import torchvision
    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "fastai": fastai.__version__, "albumentations": albumentations.__version__, "numpy": np.__version__,
            "cuda": torch.version.cuda}


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


# ---------------------------------------------------------------------------------------------
# Before training: how long will it take on this CPU?

def images_per_second(model, images, train):
    """Throughput of a copy of `model` on one batch, so the real model is left untouched."""
    model = copy.deepcopy(model).train(train)
    labels = torch.zeros(len(images), dtype=torch.long, device=images.device)

    def step():
        with torch.set_grad_enabled(train):
            out = model(images)
            if train:
                torch.nn.functional.cross_entropy(out, labels).backward()

    step()  # the first call pays one-off set-up costs
    start = time.perf_counter()
    step()
    return len(images) / (time.perf_counter() - start)


def print_cpu_estimate(learn, finder_iters, epochs):
    images = learn.dls.valid.one_batch()[0][:64].as_subclass(torch.Tensor)  # as fastai's CastToTensor hands it over
    model = getattr(learn.model, "_orig_mod", learn.model)  # eager: compiling here would cost more than it tells
    train_rate = images_per_second(model, images, train=True)
    eval_rate = images_per_second(model, images, train=False)
    trained = (finder_iters + epochs * len(learn.dls.train)) * learn.dls.train.bs
    evaluated = (epochs + 1) * len(learn.dls.valid.dataset)  # one pass per epoch, one for the plots
    seconds = trained / train_rate + evaluated / eval_rate
    duration = f"{seconds / 60:.0f} min" if seconds > 90 else f"{seconds:.0f} s"
    print(f"CPU only: this run will take about {duration} ({train_rate:.0f} training images/s, "
          f"{eval_rate:.0f} test images/s here); a GPU takes seconds")


# ---------------------------------------------------------------------------------------------
# The LR range test.

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

    def loss_at(lr):
        return float(np.interp(np.log(lr), np.log(lrs), losses))

    learn.recorder.plot_lr_find(suggestions=[(lr_min, loss_at(lr_min)), (lr_max, loss_at(lr_max))],
                                nms=[f"LRMIN {lr_min:.2e}", f"LRMAX {lr_max:.2e}"])
    fig = plt.gcf()
    fig.axes[0].set_title(f"LR range test ({num_it} iterations)")
    save_figure(fig, run_dir / "lr_find.png")
    write_json(run_dir / "lr_find.json", {"lr_min": lr_min, "lr_max": lr_max, "rule": LR_RULE,
                                          "iterations": num_it, "start_lr": FINDER_START_LR,
                                          "end_lr": FINDER_END_LR})
    print(f"LR range test: LRMIN = {lr_min:.3e}, LRMAX = {lr_max:.3e}")
    return lr_min, lr_max


# ---------------------------------------------------------------------------------------------
# Training.

def one_cycle(lr_min, lr_max, peak_epoch, epochs):
    """fit_one_cycle's arguments for LRMIN -> LRMAX at `peak_epoch` -> LRMIN. fastai starts at
    lr_max/div and ends at lr_max/div_final, so both divisors are LRMAX/LRMIN ("no
    annihilation": the LR never goes below LRMIN)."""
    div = lr_max / lr_min
    return dict(n_epoch=epochs, lr_max=lr_max, div=div, div_final=div, pct_start=peak_epoch / epochs)


class TimeToAccuracy(Callback):
    """The first epoch, and the seconds since the fit began, at which test accuracy reached each
    milestone; with a `target`, stops the fit at the end of the epoch that reaches it. A resumed
    fit counts from `start_epoch`: the epochs before it were trained by the interrupted run."""
    order = CSVLogger.order + 1  # after history.csv has the epoch's line

    def __init__(self, milestones=ACCURACY_MILESTONES, target=None, start_epoch=0):
        self.milestones = sorted({*milestones, *([target] if target else [])})
        self.target, self.start_epoch = target, start_epoch

    def before_fit(self):
        self.start, self.reached, self.stopped_early = time.perf_counter(), {}, False

    def after_epoch(self):
        if self.epoch < self.start_epoch:
            return  # skipped by fit_one_cycle on resume
        accuracy = float(dict(zip(self.recorder.metric_names[1:-1], self.recorder.values[-1]))["accuracy"])
        for milestone in self.milestones:
            if accuracy >= milestone and milestone not in self.reached:
                self.reached[milestone] = (self.epoch + 1, round(time.perf_counter() - self.start, 3))
        if self.target and accuracy >= self.target and self.epoch + 1 < self.n_epoch:
            self.stopped_early = True
            raise CancelFitException

    def results(self):
        results = {}
        for milestone in self.milestones:
            epoch, seconds = self.reached.get(milestone, (None, None))
            results[f"first_epoch_{100 * milestone:g}"] = epoch
            results[f"seconds_to_{100 * milestone:g}"] = seconds
        return {**results, "target_acc": self.target, "stopped_early": self.stopped_early}


class StopOnDivergence(Callback):
    """Stops training when the loss is no longer finite or has passed `factor` times the loss of
    guessing, ln(classes): a sign that the LR is too high. fit() then reports it. The worst loss is
    kept on the device and read every `check_every` batches: reading it every batch would make the
    CPU wait for the GPU at each step."""
    order = Recorder.order + 1

    def __init__(self, factor=4, check_every=10):
        self.factor, self.check_every, self.problem = factor, check_every, None

    def before_epoch(self):
        self.worst = None

    def after_batch(self):
        if not self.training:
            return
        loss = self.loss.detach()
        self.worst = loss if self.worst is None else torch.maximum(self.worst, loss)  # NaN wins, as it should
        if (self.iter + 1) % self.check_every and self.iter + 1 < self.n_iter:
            return
        worst, self.worst = float(self.worst), None
        if not np.isfinite(worst) or worst > self.factor * np.log(len(self.dls.vocab)):
            self.problem = (f"the loss diverged ({worst:.3g}) by epoch {self.epoch + 1}, iteration {self.iter + 1}, "
                            f"LR {self.opt.hypers[-1]['lr']:.3g}: the LR is likely too high; "
                            "lower --lr-max and --lr-min, or rerun the LR range test")
            raise CancelFitException


class EpochSnapshot(Callback):
    """An in-memory copy of the weights and optimizer state as the last finished epoch left them:
    what an interruption writes as the checkpoint (a copy on the device costs little; a file
    every epoch would not)."""
    order = Recorder.order + 1  # after the recorder has logged the epoch

    def __init__(self, resumed):
        self.resumed, self.state = resumed, None

    def after_epoch(self):
        if self.epoch < self.resumed.get("epochs_done", 0):
            return  # an epoch fit_one_cycle skipped when resuming
        self.state = {"model": {k: v.detach().clone() for k, v in get_model(self.model).state_dict().items()},
                      "opt": copy.deepcopy(self.opt.state_dict())}
        hps = self.learn.param_scheduler.hps  # the recorder gets them only once fit ends
        self.progress_so_far = {"epochs_done": self.epoch + 1,
                         "lrs": [*self.resumed.get("lrs", []), *map(float, hps["lr"])],
                         "moms": [*self.resumed.get("moms", []), *map(float, hps["mom"])]}


class HistoryLogger(CSVLogger):
    """fastai's CSVLogger; on a resumed run, the epochs fit_one_cycle skips are logged with their
    rows from before the interruption, so history.csv is whole again."""

    def __init__(self, earlier_rows):
        super().__init__("history.csv")
        self.earlier_rows, self.rows = earlier_rows, []

    def _write_line(self, log):
        if log[0] < len(self.earlier_rows):
            log = self.earlier_rows[log[0]]
        self.rows.append([str(v) for v in log])
        super()._write_line(log)


@contextmanager
def sigterm_as_ctrl_c():
    """SIGTERM (what a scheduler sends before killing a job) ends training as Ctrl-C does."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def fit(learn, schedule, run_dir, resumed, cbs=()):
    """fit_one_cycle from the start or, resumed, from the checkpoint's epoch on the same schedule."""
    logger, snapshot, divergence = HistoryLogger(resumed.get("history", [])), EpochSnapshot(resumed), StopOnDivergence()
    start = time.perf_counter()
    try:
        on_cpu = learn.dls.device.type == "cpu"  # torch's SyncBatchNorm needs GPUs
        with sigterm_as_ctrl_c(), learn.distrib_ctx(sync_bn=not on_cpu, cpu=on_cpu):
            learn.fit_one_cycle(**schedule, cbs=[logger, snapshot, divergence, *cbs],
                                start_epoch=resumed.get("epochs_done", 0))
    except KeyboardInterrupt:
        seconds = resumed.get("fit_seconds", 0) + time.perf_counter() - start
        raise Interrupted(save_checkpoint(run_dir, snapshot, logger.rows, seconds, resumed)) from None
    if divergence.problem:
        raise UsageError(divergence.problem)
    if learn.dls.device.type == "cuda":
        torch.cuda.synchronize(learn.dls.device)
    return resumed.get("fit_seconds", 0) + time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# Interruption and resume.

def save_checkpoint(run_dir, snapshot, rows, fit_seconds, resumed):
    """Write the last finished epoch's weights and optimizer state (fastai's save_model format)
    and what the resumed run needs to join up; returns the message for the user."""
    if snapshot.state is not None:
        with atomic(run_dir / "checkpoint.pth") as tmp:
            torch.save(snapshot.state, tmp)
        done = snapshot.progress_so_far["epochs_done"]
        write_json(run_dir / "checkpoint.json",
                   {**snapshot.progress_so_far, "history": rows[:done], "fit_seconds": fit_seconds})
        write_curves(pd.read_csv(run_dir / "history.csv").iloc[:done], run_dir)
    elif not resumed:
        return "interrupted before the first epoch finished: nothing to resume; start the run again"
    done = json.loads((run_dir / "checkpoint.json").read_text())["epochs_done"]
    return (f"interrupted; epochs 1-{done} are saved in {run_dir}. Resume with: "
            f"python {Path(__file__).name} --resume {run_dir}")


def load_checkpoint(learn, run_dir):
    """Weights and optimizer state into `learn` (weights_only: the file cannot run code), and the
    progress saved with them."""
    learn.create_opt()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", "Could not load the optimizer state")  # fastai only warns
            load_model(run_dir / "checkpoint.pth", learn.model, learn.opt, device=learn.dls.device)
    except Exception as e:
        raise UsageError(f"{run_dir / 'checkpoint.pth'} cannot be loaded ({type(e).__name__}): "
                         "start a new run") from None
    return json.loads((run_dir / "checkpoint.json").read_text())


def check_same_run(run_dir, config):
    """A resumed run must see the data the run started with."""
    saved = json.loads((run_dir / "config.json").read_text())
    for key in ("data", "train_images", "test_images", "classes"):
        if saved.get(key) != config[key]:
            raise UsageError(f"{run_dir} was run on other data ({key}: {saved.get(key)}, now {config[key]}): "
                             "resume it with its own --data, or start a new run")


class FlipInputs(Callback):
    """Mirror every input batch left-right where it lies (on the GPU path, on the device)."""

    def before_batch(self):
        self.learn.xb = tuple(x.flip(-1) for x in self.xb)


def flip_tta_accuracy(learn):
    """Test accuracy of the final model when it averages its probabilities for each image and its mirror."""
    probs, targets = learn.get_preds(dl=learn.dls.valid)
    mirrored, _ = learn.get_preds(dl=learn.dls.valid, cbs=[FlipInputs()])
    return float(accuracy((probs + mirrored) / 2, targets))


# ---------------------------------------------------------------------------------------------
# Outputs.

def write_schedule(learn, run_dir, lr_min, lr_max, resumed):
    hps = learn.recorder.hps
    iters_per_epoch = len(learn.dls.train)
    lrs, moms = [*resumed.get("lrs", []), *hps["lr"]], [*resumed.get("moms", []), *hps["mom"]]
    schedule = pd.DataFrame({"iteration": np.arange(len(lrs)), "lr": lrs, "mom": moms})
    schedule.insert(1, "epoch", schedule.iteration / iters_per_epoch)
    write_csv(run_dir / "lr_schedule.csv", schedule)
    fig, (ax_lr, ax_mom) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    ax_lr.plot(schedule.epoch, schedule.lr)
    for lr, label in ((lr_min, "LRMIN"), (lr_max, "LRMAX")):
        ax_lr.axhline(lr, ls=":", c="gray")
        ax_lr.annotate(f"{label} {lr:.2e}", (0, lr), textcoords="offset points", xytext=(2, 3), fontsize=8)
    ax_lr.set(ylabel="learning rate", title="one-cycle schedule, per iteration")
    ax_mom.plot(schedule.epoch, schedule.mom)
    ax_mom.set(xlabel="epoch", ylabel="momentum (Adam beta1)")
    save_figure(fig, run_dir / "lr_schedule.png")


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
    save_figure(fig, run_dir / "curves.png")


def write_interpretation(learn, run_dir):
    interp = ClassificationInterpretation.from_learner(learn)
    interp.plot_confusion_matrix(figsize=(7, 7), title="confusion matrix (test set)")
    save_figure(plt.gcf(), run_dir / "confusion_matrix.png")
    with plt.rc_context({"axes.titlesize": 9}):
        interp.plot_top_losses(10, nrows=2, figsize=(15, 7))
        save_figure(plt.gcf(), run_dir / "misclassified.png")


def write_weights(learn, run_dir, stats):
    state = {name: tensor.detach().float().contiguous().cpu() for name, tensor in learn.model.state_dict().items()}
    with atomic(run_dir / "model.safetensors") as tmp:
        save_file(state, tmp, metadata={"format": "pt", "model": "CustomResNet"})
    write_json(run_dir / "classes.json", {"classes": list(learn.dls.vocab), "mean": stats[0], "std": stats[1]})


def summarize(history, learn, args, fit_seconds, device):
    images_trained = len(history) * len(learn.dls.train) * learn.dls.train.bs
    return {
        "final_accuracy": float(history.accuracy.iloc[-1]),  # the headline: never the best epoch
        "best_accuracy": float(history.accuracy.max()),
        "epochs": len(history),  # fewer than asked when --target-acc stopped the run
        "parameters": count_parameters(learn.model),
        "fit_seconds": round(fit_seconds, 3),
        "train_images_per_s": round(images_trained / fit_seconds, 1),
        "device": device_name(device),
        "versions": library_versions(),
        "seed": args.seed,
        "git_commit": compare.git_commit(),
        "processes": max(num_distrib(), 1), "effective_bs": args.bs,
    }


# ---------------------------------------------------------------------------------------------

def main(argv=None):
    args = parse_args(argv)
    points = sweep_grid(args.sweep)
    try:
        if len(points) * args.runs == 1:
            run(member(args, points[0]))
        else:
            run_group(args, points)
    except (UsageError, DataError) as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as e:
        print(e, file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("interrupted before training: nothing to resume", file=sys.stderr)
        sys.exit(130)


def run_group(args, points):
    """--runs seeds of every sweep point, each in its own run folder; the group folder lists them
    and holds their summary (mean, std, min, max per point) and compare.png."""
    if num_distrib() > 1:
        raise UsageError("--runs and --sweep run one process at a time: launch each run with accelerate, "
                         "or drop accelerate launch for the group")
    group_dir = new_run_dir(args.out, f"{args.name}-group" if args.name else "group")
    print(f"group folder: {group_dir}: {len(points)} configuration(s) x {args.runs} seed(s)")
    members = [run(member(args, point, seed, group_dir.name))[0]
               for point in points for seed in range(args.seed, args.seed + args.runs)]
    runs = compare.load_runs(members)
    points_table = compare.points_table(runs)
    write_json(group_dir / "summary.json", {"members": [m.name for m in members], "sweep": args.sweep,
                                            "runs": args.runs, "points": compare.records(points_table)})
    compare.write_figure(runs, group_dir / "compare.png")
    print(compare.format_points(points_table))
    print(f"group summary and compare.png in {group_dir}")


def run(args):
    processes, device = join_processes(resolve_device(args.device))
    main_process = rank_distrib() == 0
    if args.bs % processes:
        raise UsageError(f"--bs {args.bs} does not split evenly over {processes} processes: give a multiple of {processes}")
    precision = resolve_precision(args.precision, device)
    seed_everything(args.seed, args.deterministic)
    folder = cifar10_folder(args.data)
    dls, stats = cifar10_dataloaders(folder, bs=args.bs, aug=args.aug, device=device, subset=args.subset,
                                     workers=args.workers, seed=args.seed)
    if len(dls.train) == 0:
        raise UsageError(f"{len(dls.train_ds)} training images make no full batch of --bs {args.bs}: "
                         "lower --bs or raise --subset")
    run_dir = output_folder(args, main_process)
    learn = make_learner(dls, args, run_dir, precision)
    config = {**vars(args), "data": str(folder), "device": str(device), "precision": precision,
              "train_images": len(dls.train_ds), "test_images": len(dls.valid_ds), "classes": list(dls.vocab),
              "normalize_mean": stats[0], "normalize_std": stats[1], "run_dir": str(run_dir), "processes": processes,
              "bs_per_process": args.bs // processes}
    if args.resume:
        check_same_run(Path(args.resume), config)
    print(f"run folder: {run_dir}\nconfig: {json.dumps(config)}")
    write_json(run_dir / "config.json", config)  # written again once the LRs are known

    run_finder = args.find_lr or args.lr_min is None or args.lr_max is None
    # The range test is about 100 iterations, but never longer than the training run it serves.
    finder_iters = args.finder_iters if args.find_lr else min(args.finder_iters, args.epochs * len(dls.train))
    if device.type == "cpu":
        print_cpu_estimate(learn, finder_iters if run_finder else 0, 0 if args.find_lr else args.epochs)
    lr_min, lr_max, lr_source = args.lr_min, args.lr_max, "flags"
    if run_finder:
        # The main process alone runs the range test, on whole batches; the others take its LRs.
        with as_if_alone():
            found = list(find_lr(learn, run_dir, finder_iters)) if main_process else [None, None]
        found_min, found_max = broadcast_object_list(found) if processes > 1 else found
        lr_min, lr_max, lr_source = lr_min or found_min, lr_max or found_max, "lr_find.json"
    config.update(lr_min=lr_min, lr_max=lr_max, lr_source=lr_source, finder_iters=finder_iters)
    write_json(run_dir / "config.json", config)
    if args.find_lr:
        return
    if lr_min >= lr_max:
        raise UsageError(f"LRMIN {lr_min:.3g} is not below LRMAX {lr_max:.3g}: give both --lr-min and --lr-max")

    schedule = one_cycle(lr_min, lr_max, args.peak_epoch, args.epochs)
    print(f"training: {args.epochs} epochs, LR {lr_min:.3e} -> {lr_max:.3e} (epoch {args.peak_epoch:g}) "
          f"-> {lr_min:.3e}, Adam, wd {args.wd}, bs {args.bs}, {precision}, on {device_name(device)}"
          + (f", data-parallel: {processes} processes x {args.bs // processes} = an effective batch of {args.bs}"
             if processes > 1 else ""))
    resumed = load_checkpoint(learn, Path(args.resume)) if args.resume else {}
    time_to_accuracy = TimeToAccuracy(target=args.target_acc, start_epoch=resumed.get("epochs_done", 0))
    split_batches(learn, processes)
    fit_seconds = fit(learn, schedule, run_dir, resumed, [time_to_accuracy])
    uncompiled(learn)

    history = pd.read_csv(run_dir / "history.csv")
    write_schedule(learn, run_dir, lr_min, lr_max, resumed)
    write_curves(history, run_dir)
    write_interpretation(learn, run_dir)
    summary = {**summarize(history, learn, args, fit_seconds, device), **time_to_accuracy.results()}
    if args.tta:
        summary["tta_accuracy"] = flip_tta_accuracy(learn)
    write_json(run_dir / "summary.json", summary)
    write_weights(learn, run_dir, stats)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fastai warns that a pickle runs code: that is for the loader
        with atomic(run_dir / "export.pkl") as tmp:
            learn.export(tmp.absolute())  # export joins learn.path (the run folder) to a relative name
    for name in ("checkpoint.pth", "checkpoint.json"):
        (run_dir / name).unlink(missing_ok=True)  # the run is whole: model.safetensors supersedes it
    write_report(run_dir)
    if main_process:
        compare.append_to_index(args.out, run_dir, config, summary)
    tta = f" ({100 * summary['tta_accuracy']:.2f}% with flip TTA)" if args.tta else ""
    stopped = f", stopped at --target-acc {args.target_acc}" if summary["stopped_early"] else ""
    print(f"final test accuracy {100 * summary['final_accuracy']:.2f}%{tta} after {summary['epochs']} epochs"
          f"{stopped}, fit {fit_seconds:.1f} s; outputs in {run_dir}")
    return run_dir, summary


if __name__ == "__main__":
    main()
