"""The machine a run runs on: its device and precision, seeding, what to call it in the outputs,
where the run's time goes and, on a CPU, how long the run will take."""
import functools
import os
import platform
import time
from importlib import metadata

import torch
from fastai.callback.core import Callback
from fastai.torch_core import find_bs, set_seed

from cifar10_fast.core.config import UsageError
from cifar10_fast.core.internals import compile_seconds
from cifar10_fast.core.settings import no_gpu
from cifar10_fast.training.recording import print_line

# What torch says when an allocation fails, on the CPU (DefaultCPUAllocator) or elsewhere.
OUT_OF_MEMORY_MESSAGES = ("can't allocate memory", "not enough memory", "out of memory")


def resolve_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name} is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(no_gpu(name))
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.type == "cuda" and (device.index or 0) >= count:  # else torch's "invalid device ordinal" traceback
        last = f" to cuda:{count - 1}" if count > 1 else ""
        raise UsageError(f"--device {name}: the CUDA GPUs here are cuda:0{last}: give one of them")
    return device


def resolve_precision(precision, device, sync_debug=False):
    if device.type != "cuda":
        if precision in ("bf16", "fp16"):
            raise UsageError(f"--precision {precision} needs a CUDA GPU (fastai's mixed precision); "
                             f"use fp32 on {device}")
        return "fp32"
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if precision == "fp16" and sync_debug:
            raise UsageError(f"--sync-debug: {torch.cuda.get_device_name(device)} has no bf16, and fp16's gradient "
                             "scaler reads the GPU at every step by design: add --precision fp32")
    return precision


def seed_everything(seed, deterministic):
    """fastai's set_seed seeds Python, NumPy and torch (CPU and CUDA); the GPU augmentations draw
    from torch, the albumentations workers are reseeded from torch's per-worker seed. On the GPU,
    `deterministic` also makes cuDNN and every other kernel choose deterministic algorithms."""
    set_seed(seed, reproducible=deterministic)
    torch.backends.cudnn.benchmark = not deterministic  # autotuned convolutions, unless they must repeat
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to repeat itself
    if torch.are_deterministic_algorithms_enabled() != deterministic:  # setting it loads torch._dynamo: 2 s
        torch.use_deterministic_algorithms(deterministic)


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def library_versions():
    """The versions a run ran with, as installed (their packages' metadata: importing albumentations
    to ask would cost a second)."""
    installed = {name: installed_version(name)
                 for name in ("torchvision", "fastai", "albumentations", "numpy", "optuna")}
    return {"python": platform.python_version(), "torch": torch.__version__, **installed,
            "cuda": torch.version.cuda}


def installed_version(name):
    """The version of package `name`, or None where it is not installed (albumentations serves
    --aug albumentations alone, and a GPU machine may lack it)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def process_age():
    """Seconds since this process started: Python and the imports, before the first line of a run.
    On Linux, from the kernel's count since boot: psutil's start time adds the boot time, which
    Linux gives in whole seconds, so that every age it gives is off by the same fraction of one."""
    try:
        with open("/proc/self/stat") as f:
            started_ticks = int(f.read().rpartition(")")[2].split()[19])  # field 22, starttime
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, AttributeError, ValueError):  # no /proc, no CLOCK_BOOTTIME (macOS): psutil's is exact there
        import psutil
        return time.time() - psutil.Process().create_time()


class Phases:
    """Where a run's time goes, phase by phase, as it runs, and what it spent compiling: summary.json's
    `phases` and `compile_seconds`, and the last line."""

    def __init__(self, start_up=None):
        self.seconds = {} if start_up is None else {"start_up": round(start_up, 3)}
        self.last, self.compiling_before = time.perf_counter(), compile_seconds()

    def end(self, phase):
        """The phase that ends now, from the end of the one before."""
        now = time.perf_counter()
        self.seconds[phase] = round(now - self.last, 3)
        self.last = now

    def total(self):
        return sum(self.seconds.values())

    def compiling(self):
        """Seconds compiling since the run began (a process may run several)."""
        return compile_seconds() - self.compiling_before


class CpuEstimate(Callback):
    """On a CPU, how long the run will take, from its own first training batches as they run (a batch
    from one end to the next; its forward pass as the rate of test images), printed once after them:
    the range test's `finder_iters` iterations (training only: it never evaluates), the `epochs`
    still to run (a training and a test pass each) and the `final_passes` over the test set after
    the fit. The first batch pays one-off costs and is left out where there are others; what
    torch.compile took is counted, and said."""

    def __init__(self, finder_iters, epochs, final_passes, timed_batches=3, enough_seconds=1.0):
        self.finder_iters, self.epochs, self.final_passes = finder_iters, epochs, final_passes
        self.timed_batches, self.enough_seconds = timed_batches, enough_seconds
        self.batches = []  # (seconds, forward seconds, images) of each training batch so far
        self.compiling_before = compile_seconds()

    def before_train(self):
        self.batch_end = time.perf_counter()  # a batch runs from the end of the one before: loading it counts

    def before_batch(self):
        self.batch_start = time.perf_counter()

    def after_pred(self):
        self.forward_end = time.perf_counter()

    def after_batch(self):
        if not self.training:
            return
        now = time.perf_counter()
        self.batches.append((now - self.batch_end, self.forward_end - self.batch_start, find_bs(self.xb)))
        self.batch_end = now
        timed = self.batches[1:]
        if len(timed) >= self.timed_batches or sum(seconds for seconds, _, _ in timed) >= self.enough_seconds:
            self.report()

    def after_train(self):
        self.report()  # an epoch, or a whole run, of fewer batches: what there was

    after_fit = after_train

    def report(self):
        """The estimate, printed once, and the callback gone from the learner: nothing of it in the
        exported one. A fit that trained nothing (a resumed run whose fit was done) prints nothing."""
        if self.batches:
            self.print_estimate()
        self.learn.remove_cb(self)

    def print_estimate(self):
        timed = self.batches[1:] or self.batches
        images = sum(n for _, _, n in timed)
        train_rate = images / sum(seconds for seconds, _, _ in timed)
        eval_rate = images / sum(forward for _, forward, _ in timed)
        trained = (self.finder_iters + self.epochs * len(self.dls.train)) * self.dls.train.bs
        evaluated = (self.epochs + self.final_passes) * len(self.dls.valid.dataset)
        compiling = compile_seconds() - self.compiling_before
        print_line(self.learn, estimate_line(trained, evaluated, train_rate, eval_rate, compiling))


def estimate_line(trained, evaluated, train_rate, eval_rate, compiling):
    """The estimate of a run that trains `trained` images and tests `evaluated` ones (none for a
    range test alone) at the rates its first batches ran at."""
    seconds = trained / train_rate + evaluated / eval_rate + compiling
    duration = (f"about {seconds / 60:.0f} min" if seconds > 90 else f"about {seconds:.0f} s" if seconds >= 0.5
                else "under a second")
    tested = f" and {evaluated} test images at {eval_rate:.0f}/s" if evaluated else ""
    compiled = (f"; and {compiling:.0f} s compiling the model, more for its first test pass" if compiling else "")
    return (f"CPU only: this run will take {duration} ({trained} training images at {train_rate:.0f}/s{tested}, "
            f"timed on its first training batches{compiled})")


def out_of_memory(error):
    return isinstance(error, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(error, RuntimeError) and any(message in str(error) for message in OUT_OF_MEMORY_MESSAGES))


def reports_out_of_memory(run):
    """`run(args, ...)`, where running out of memory, on the GPU or the CPU, from the model's creation
    to the last test pass, is one line naming the two flags that size the run."""
    @functools.wraps(run)
    def checked_run(args, **kwargs):
        try:
            return run(args, **kwargs)
        except (MemoryError, RuntimeError) as e:  # torch.OutOfMemoryError is a RuntimeError
            if not out_of_memory(e):
                raise
            raise UsageError(f"out of memory for CustomResNet --width {args.width} in batches of --bs {args.bs}: "
                             "lower --width (64 is the recipe) or --bs") from e
    return checked_run
