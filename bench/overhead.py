"""The host's cost per training step: ours (train_fastai.py's own fit) against a plain PyTorch loop
doing the same work, in one process. On a CPU, a proxy for what the GPU waits on.

Why: the 24-epoch recipe is ~2,330 steps of batch 512; on an H100 the model's work is ~1.5-3 ms a
step, so the host must queue each step faster than that. With a thin model on a CPU the model's own
compute is small, and what is left of a step is the framework's cost.

    ours   `train_fastai.main` with --lr-min/--lr-max (no finder) on a synthetic CIFAR-10-shaped
           folder: its Learner, its DataLoaders (--aug gpu: the images held by device_loader.DeviceDataLoader),
           its callbacks and fit_one_cycle; the fit's seconds are the run's summary.json fit_seconds
    plain  the same thin CustomResNet on the same uint8 images held as one tensor: augment.py's
           transforms, normalisation, cross-entropy, fused AdamW (decoupled weight decay, none on
           BatchNorm and biases) under OneCycleLR with the same LRs and momentum cycle, train() and
           eval(), a test pass with loss and accuracy after every epoch

Both fits are timed whole (their test passes included) and divided by the training steps. Each side
first fits once untimed (warm-up); then the repeats alternate ours and plain, so a change in the
machine's load falls on both. Last, torch.profiler counts the aten operators (on a GPU also the
CUDA kernels) of `profile_steps` training steps of each, `profile_warmup` steps into the second epoch.

    python -m bench.overhead                         # the measurement, ~2 minutes on 2 idle cores
    python -m bench.overhead --smoke --out DIR       # tiny, to test the harness: its figures mean nothing
    python -m bench.overhead --device cuda --width 64 --bs 512   # on a GPU, at the recipe's sizes

Each setting has a flag (--help lists them with their defaults). Results:
bench/results/overhead-<device>-<date>.json with the raw log (.log) beside it.
"""
import argparse
import os
import sys
from pathlib import Path

from cifar10_fast.core import settings, startup
from cifar10_fast.core.config import PEAK_FRACTION, RECIPE, option

REPO = Path(__file__).resolve().parents[1]

# The measurement. A thin model (width 8) in batches of 16 on one thread keeps the model's compute
# (10-15 ms a step on a 2-core Xeon) of the order of the framework's cost, and the whole bench at
# about 2 minutes; the operators a step calls do not depend on the batch size. 97 training and 20
# test batches an epoch are what the recipe has (50,000 and 10,000 images in batches of 512), so
# per-epoch costs weigh on a step as in the real fit. One thread: the host's work is one Python
# thread anyway, and a second compute thread adds wake-ups and noise on a shared machine. 20
# profiled steps: whole periods of what ours does every 10 steps (its divergence check).
SETTINGS = dict(device="cpu", threads=1, width=8, bs=16, train_batches=97, test_batches=20, epochs=4,
                repeats=5, lr_min=1e-4, lr_max=1e-3, seed=0, profile_warmup=10, profile_steps=20, top=15)
# Seconds, for the test: every path of the harness, no figure to quote.
SMOKE = dict(SETTINGS, bs=8, train_batches=6, test_batches=2, epochs=2, repeats=2, profile_warmup=2,
             profile_steps=3, top=5)
SIDES = ("ours", "plain")
RATIO_GOAL = 1.15  # issue 11: ours' ms per step at most 1.15 times plain's
CLASSES = [f"class{k}" for k in range(10)]
# fastai's Adam and fit_one_cycle defaults, as ours runs them: beta1 cycles 0.95 -> 0.85 -> 0.95.
ADAM_BETA2, ADAM_EPS, BETA1_LOW, BETA1_HIGH = 0.99, 1e-5, 0.85, 0.95
# The settings ours hands train_fastai.py (fit_ours): checked by its own parser before anything runs,
# not when ours first trains, after the results file is started.
TRAINING_FLAGS = ("epochs", "bs", "width", "lr_min", "lr_max", "seed")


def parse_args(argv=None):
    """The measurement's settings; every check that needs no torch is done here, before it loads."""
    p = settings.OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in SETTINGS.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(default),
                       help=f"default {default}; with --smoke {SMOKE[name]}")
    p.add_argument("--smoke", action="store_true", help="tiny and quick, to test the harness; its figures mean nothing")
    p.add_argument("--out", type=Path, help="results folder (default bench/results; required with --smoke)")
    p.add_argument("--debug", action="store_true", help="on an error, show the traceback too")
    args = p.parse_args(argv)
    if args.smoke and args.out is None:
        p.error("--smoke needs --out DIR: smoke results are never written into bench/results")
    for name, default in (SMOKE if args.smoke else SETTINGS).items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    settings.check_training_flags(args, TRAINING_FLAGS)  # --width, --bs and --epochs at least 1 among them
    for name in ("threads", "train_batches", "test_batches", "repeats", "profile_steps", "top"):
        if getattr(args, name) < 1:
            p.error(f"{option(name)} must be at least 1, not {getattr(args, name)}")
    if args.profile_warmup < 0:  # else the window never opens, found only after the whole measurement
        p.error(f"--profile-warmup must not be negative, not {args.profile_warmup}")
    if args.threads > os.cpu_count():  # more compute threads than cores only measures their contention
        p.error(f"--threads {args.threads} is more than the {os.cpu_count()} cores of this machine: "
                f"give at most {os.cpu_count()}")
    if min(args.train_batches, args.test_batches) * args.bs < len(CLASSES):
        p.error(f"each split needs an image of each of the {len(CLASSES)} classes: raise --bs or the batches")
    if args.device not in ("cpu", "cuda"):
        p.error(f"--device is cpu or cuda, not {args.device}")
    if args.device == "cuda" and settings.no_cuda_here():
        p.error(settings.no_gpu("cuda"))
    if args.epochs < 2 or args.profile_warmup + args.profile_steps >= args.train_batches:
        p.error("the profiled steps lie in the second epoch: --epochs must be at least 2, and --profile-warmup "
                "+ --profile-steps below --train-batches")
    args.out = args.out or REPO / "bench" / "results"
    settings.check_out_folder(p, args.out)
    return args


startup.flags_first(__name__, parse_args)  # --help and bad flags answer before torch and fastai load (seconds)

# The rest loads in seconds: it comes after the flags are checked.
import json
import shlex
import statistics
import tempfile
import time
import warnings
import weakref
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout
from datetime import datetime, timezone
from unittest import mock

warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated")  # raised inside fastai's import
import torch
import torch.nn.functional as F
from fastai.vision.all import TensorImage
from PIL import Image

import train_fastai
from augment import gpu_augmentations
from bench.bench import Tee, finish, results_stem
from bench.measure import cpu_name, synchronize
from cifar10_fast.core.errors import BadInput, one_line_errors
from cifar10_fast.core.files import write_json
from cifar10_fast.data.decoded_folder import channel_stats
from cifar10_fast.training.hardware import library_versions, seed_everything
from cifar10_fast.training.outputs import git_commit
from customresnet import CustomResNet


def device_label(device):
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


# ---------------------------------------------------------------------------------------------
# The data: one set of images for both sides.

def synthetic_cifar10(folder, args):
    """Noise tinted by class, written in fastai's layout as PNG (lossless, so ours decodes the very
    pixels plain holds): learnable, so each side's accuracy shows that it trained. Returns the
    uint8 (N, 3, 32, 32) images and labels of each split."""
    generator = torch.Generator().manual_seed(args.seed)
    tints = torch.randint(0, 192, (len(CLASSES), 3, 1, 1), generator=generator)
    data = {}
    for split, batches in (("train", args.train_batches), ("test", args.test_batches)):
        labels = torch.arange(batches * args.bs) % len(CLASSES)
        noise = torch.randint(0, 64, (len(labels), 3, 32, 32), generator=generator)
        images = (tints[labels] + noise).to(torch.uint8)
        for i, (image, label) in enumerate(zip(images, labels)):
            path = folder / split / CLASSES[label] / f"{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
        data[split] = images, labels
    return data


# ---------------------------------------------------------------------------------------------
# ours: train_fastai.py itself.

def fit_ours(args, precision, folder, work):
    """One run of train_fastai.main; returns (fit seconds, training steps, final test accuracy)."""
    out = Path(tempfile.mkdtemp(dir=work, prefix="ours-"))
    train_fastai.main(["--data", str(folder), "--out", str(out), "--device", args.device, "--precision", precision,
                       "--width", str(args.width), "--bs", str(args.bs), "--epochs", str(args.epochs),
                       "--lr-min", str(args.lr_min), "--lr-max", str(args.lr_max), "--seed", str(args.seed)])
    run_dir, = (p for p in out.iterdir() if p.is_dir())
    summary = json.loads((run_dir / "summary.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    steps = summary["epochs"] * (config["train_images"] // args.bs)  # fastai drops a last partial batch
    if steps != args.epochs * args.train_batches:
        raise SystemExit(f"error: ours trained {steps} steps, not {args.epochs} x {args.train_batches}: "
                         f"see its log above")
    return summary["fit_seconds"], steps, summary["final_accuracy"]


# ---------------------------------------------------------------------------------------------
# plain: the same work in a plain PyTorch loop.

def fused_adamw(model, lr, wd):
    """ours' optimiser, fused: decoupled weight decay on weights, none on BatchNorm and biases
    (fastai's default), fastai's Adam betas and eps."""
    weights = [p for p in model.parameters() if p.ndim > 1]
    norms_and_biases = [p for p in model.parameters() if p.ndim == 1]
    return torch.optim.AdamW([dict(params=weights, weight_decay=wd), dict(params=norms_and_biases, weight_decay=0)],
                             lr=lr, betas=(BETA1_HIGH, ADAM_BETA2), eps=ADAM_EPS, fused=True)


class PlainFit:
    """CustomResNet trained on images held on the device: each step indexes a batch, normalises it,
    applies augment.py's transforms and takes one AdamW step; each epoch ends with a test pass."""

    def __init__(self, args, precision, data, device):
        seed_everything(args.seed, deterministic=False)  # as ours seeds, with cuDNN autotuning on a GPU
        self.bs, self.epochs = args.bs, args.epochs
        self.model = CustomResNet(len(CLASSES), args.width).to(device)
        if device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)  # as ours' learn.to_channelslast
        self.opt = fused_adamw(self.model, args.lr_max, RECIPE.wd)
        self.schedule = torch.optim.lr_scheduler.OneCycleLR(
            self.opt, max_lr=args.lr_max, total_steps=args.epochs * args.train_batches,
            pct_start=PEAK_FRACTION, div_factor=args.lr_max / args.lr_min, final_div_factor=1.0,
            base_momentum=BETA1_LOW, max_momentum=BETA1_HIGH)
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        self.augmentations = gpu_augmentations()
        mean, std = channel_stats(data["train"][0])
        self.mean, self.std = (torch.tensor(s, device=device).view(1, 3, 1, 1) for s in (mean, std))
        self.train_images, self.train_labels = (t.to(device) for t in data["train"])
        self.test_images, self.test_labels = (t.to(device) for t in data["test"])
        self.device = device

    def normalize(self, images):
        return (images.float() / 255 - self.mean) / self.std

    def augment(self, images):
        # augment.py's transforms are fastai Transforms on TensorImage, applied here as fastai's
        # batch pipeline applies them to a training batch; the model gets a plain tensor, as from
        # fastai's CastToTensor.
        images = TensorImage(images)
        for transform in self.augmentations:
            images = transform(images, split_idx=0)
        return images.as_subclass(torch.Tensor)

    def train_epoch(self):
        self.model.train()
        order = torch.randperm(len(self.train_labels), device=self.device)
        for start in range(0, len(order) - self.bs + 1, self.bs):
            batch = order[start:start + self.bs]
            images = self.augment(self.normalize(self.train_images[batch]))
            with self.autocast:
                loss = F.cross_entropy(self.model(images), self.train_labels[batch])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.schedule.step()

    def test_pass(self):
        """Test loss and accuracy, summed on the device and read once."""
        self.model.eval()
        loss_sum = correct = torch.zeros((), device=self.device)
        with torch.no_grad(), self.autocast:
            for start in range(0, len(self.test_labels), self.bs):
                labels = self.test_labels[start:start + self.bs]
                logits = self.model(self.normalize(self.test_images[start:start + self.bs]))
                loss_sum = loss_sum + F.cross_entropy(logits, labels, reduction="sum")
                correct = correct + (logits.argmax(1) == labels).sum()
        return loss_sum.item() / len(self.test_labels), correct.item() / len(self.test_labels)

    def fit(self):
        """Returns (fit seconds, training steps, final test accuracy)."""
        start = time.perf_counter()
        for epoch in range(self.epochs):
            self.train_epoch()
            loss, accuracy = self.test_pass()
            print(f"plain epoch {epoch + 1}: test loss {loss:.4f}, accuracy {accuracy:.4f}")
        synchronize(self.device)
        return time.perf_counter() - start, self.schedule.last_epoch, accuracy  # OneCycleLR counts the steps


# ---------------------------------------------------------------------------------------------
# Operators per step.

class WindowProfiled(Exception):
    """Stops a fit once its profiled steps are done."""


def profile_training_steps(fit, device, warmup, steps):
    """Runs `fit()` (any loop that trains a CustomResNet for 2 epochs or more) under torch.profiler
    from the forward pass of training step warmup+1 of its second epoch to that of step
    warmup+steps+1, that is over `steps` whole steps (data, augmentation, loss, backward, optimizer,
    callbacks), then stops it. A global forward hook finds the steps, so ours runs its own code path
    untouched. The steps are counted per model from its first test pass on: a copy that runs a
    batch or two outside the fit never opens the window, and the first epoch is warm-up."""
    activities = [torch.profiler.ProfilerActivity.CPU] + (
        [torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
    profiler = torch.profiler.profile(activities=activities)
    steps_after_first_test = weakref.WeakKeyDictionary()

    def count_step(model, inputs):
        if not isinstance(model, CustomResNet):
            return
        if not model.training:
            if steps_after_first_test.setdefault(model, 0) > warmup:
                profiler.stop()
                raise RuntimeError("the profiled steps reached a test pass: lower --profile-warmup or --profile-steps")
            return
        if model not in steps_after_first_test:
            return  # its first epoch
        steps_after_first_test[model] += 1
        if steps_after_first_test[model] in (warmup + 1, warmup + steps + 1):
            synchronize(device)  # the window holds the device work of its own steps only
            if steps_after_first_test[model] == warmup + 1:
                profiler.start()
            else:
                profiler.stop()
                raise WindowProfiled

    hook = torch.nn.modules.module.register_module_forward_pre_hook(count_step)
    try:
        fit()
        raise RuntimeError(f"the fit ended before step {warmup + steps + 1} of its second epoch")
    except WindowProfiled:
        return operator_counts(profiler, steps)
    finally:
        hook.remove()


def operator_counts(profiler, steps):
    """aten operator calls per step. `by_operator` and `aten_ops` count the calls the loop itself
    makes, not those an operator makes inside (aten::to's aten::copy_): on a GPU, about one kernel
    launch each. `aten_ops_nested_included` counts them all: each is work for the host's dispatcher.
    `scalar_reads` are the values the loop's own calls read back one at a time (.item(), float(t),
    `if t:`): on a GPU, where such a value lies on the device, the host waits for the device at
    each. On a GPU also the CUDA kernels per step."""
    aten = [e for e in profiler.events() if e.name.startswith("aten::")]
    calls = Counter(e.name for e in aten if not called_by_an_operator(e))
    device_events = [e for e in profiler.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    kernels = [e for e in device_events if not e.name.startswith(("Memcpy", "Memset"))]
    return {"aten_ops": calls.total() / steps, "aten_ops_nested_included": len(aten) / steps,
            "scalar_reads": (calls["aten::item"] + calls["aten::is_nonzero"]) / steps,
            "cuda_kernels": len(kernels) / steps if device_events else None,
            "by_operator": {name: count / steps for name, count in calls.most_common()}}


def called_by_an_operator(event):
    parent = event.cpu_parent
    while parent is not None and not parent.name.startswith("aten::"):
        parent = parent.cpu_parent
    return parent is not None


def extra_operators(ours, plain, top):
    """The operators ours calls more often a step than plain does, most extra calls first."""
    extra = [{"operator": name, "ours": count, "plain": plain.get(name, 0.0), "extra": count - plain.get(name, 0.0)}
             for name, count in ours.items() if count > plain.get(name, 0.0)]
    return sorted(extra, key=lambda row: -row["extra"])[:top]


# ---------------------------------------------------------------------------------------------

def timing_summary(repeats):
    """Median and min of ms per step over each side's timed repeats; ours over plain, ours less plain."""
    ms = {side: [r["ms_per_step"] for r in repeats if r["side"] == side and not r["warmup"]] for side in SIDES}
    per_side = {side: {"median": statistics.median(ms[side]), "min": min(ms[side])} for side in SIDES}
    ours, plain = per_side["ours"], per_side["plain"]
    return {"ms_per_step": per_side, "ratio": {key: ours[key] / plain[key] for key in ours},
            "extra_ms_per_step": {key: ours[key] - plain[key] for key in ours}}


def report(results):
    ms, ratio, extra = results["ms_per_step"], results["ratio"], results["extra_ms_per_step"]
    print(f"\nms per training step, median of {results['settings']['repeats']} (min): "
          f"ours {ms['ours']['median']:.2f} ({ms['ours']['min']:.2f}), "
          f"plain {ms['plain']['median']:.2f} ({ms['plain']['min']:.2f}), "
          f"ratio {ratio['median']:.3f} ({ratio['min']:.3f}; goal {RATIO_GOAL} at most), "
          f"ours' extra {extra['median']:.2f} ms ({extra['min']:.2f})")
    print(f"{'per training step':40} {'ours':>8} {'plain':>8}")
    for figure in ("aten_ops", "aten_ops_nested_included", "scalar_reads", "cuda_kernels"):
        counts = [results["operators_per_step"][side][figure] for side in SIDES]
        if None not in counts:  # no CUDA kernels on a CPU
            print(f"{figure:40} {counts[0]:8.1f} {counts[1]:8.1f}")
    print(f"{'operators ours calls more often':40} {'ours':>8} {'plain':>8} {'extra':>8}")
    for row in results["extra_operators"]:
        print(f"{row['operator']:40} {row['ours']:8.1f} {row['plain']:8.1f} {row['extra']:8.1f}")


def run_bench(args, device, precision, work, results, save):
    folder = work / "cifar10"
    data = synthetic_cifar10(folder, args)
    fits = {"ours": lambda: fit_ours(args, precision, folder, work),
            "plain": lambda: PlainFit(args, precision, data, device).fit()}
    for repeat in range(args.repeats + 1):
        for side in SIDES:
            print(f"\n{side}, {'warm-up' if repeat == 0 else f'repeat {repeat}'}")
            fit_s, steps, accuracy = fits[side]()
            results["repeats"].append({"side": side, "repeat": repeat, "warmup": repeat == 0, "fit_s": fit_s,
                                       "steps": steps, "ms_per_step": 1000 * fit_s / steps, "accuracy": accuracy})
            print(f"{side}: {json.dumps(results['repeats'][-1])}")
            save()
    results.update(timing_summary(results["repeats"]))
    for side in SIDES:
        print(f"\n{side}: profiling {args.profile_steps} training steps after {args.profile_warmup}")
        results["operators_per_step"][side] = profile_training_steps(fits[side], device, args.profile_warmup,
                                                                     args.profile_steps)
    results["extra_operators"] = extra_operators(*(results["operators_per_step"][side]["by_operator"]
                                                   for side in SIDES), args.top)


def main(argv=None):
    args = parse_args(argv)
    with one_line_errors(args.debug):  # bad input (too many results files, an unwritable --out): one line
        measure_and_record(args, argv)


def measure_and_record(args, argv):
    """Both sides fitted and profiled, the results file rewritten after each fit, the raw log beside it."""
    if args.device == "cuda" and not torch.cuda.is_available():
        raise BadInput(settings.no_gpu("cuda"))
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    # bf16 where the GPU has it, as ours' --precision auto; fp16 would need a gradient scaler in plain too.
    precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    args.out.mkdir(parents=True, exist_ok=True)
    stem = results_stem(args.out, f"overhead {device_label(device)}")
    results = {
        "command": shlex.join(["python", "-m", "bench.overhead", *(sys.argv[1:] if argv is None else argv)]),
        "smoke": args.smoke, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": device_label(device), "threads": torch.get_num_threads(), "precision": precision,
        "versions": library_versions(), "git_commit": git_commit(),
        "settings": {name: getattr(args, name) for name in SETTINGS},
        "seeds": {"data": args.seed, "ours": args.seed, "plain": args.seed},
        "repeats": [], "ms_per_step": None, "ratio": None, "ratio_goal": RATIO_GOAL, "extra_ms_per_step": None,
        "operators_per_step": {}, "extra_operators": None,
    }

    def save():
        write_json(stem.with_suffix(".json"), results)

    # The raw log is committed: it names the scratch folder and the checkout, not where they lie here.
    with tempfile.TemporaryDirectory(prefix="overhead-") as tmp, open(stem.with_suffix(".log"), "w") as log, \
            redirect_stdout(Tee(sys.stdout, log, placeholders={tmp: "$SCRATCH", REPO: "."})), \
            redirect_stderr(Tee(sys.stderr, log, placeholders={tmp: "$SCRATCH", REPO: "."})), \
            mock.patch.dict(os.environ, {"CIFAR10_CACHE": str(Path(tmp) / "cache")}):  # not the user's cache
        print(f"overhead bench: {results['command']}\ndevice: {results['device']}, {results['threads']} threads, "
              f"{precision}\nsettings: {json.dumps(results['settings'])}")
        save()
        run_bench(args, device, precision, Path(tmp), results, save)
        finish(results, save, stem, report)


if __name__ == "__main__":
    startup.run(main)
