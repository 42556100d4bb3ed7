"""The machine a run runs on: its device and precision, seeding, what to call it in the outputs,
and, on a CPU, how long the run will take."""
import copy
import functools
import os
import platform
import time
from importlib import metadata

import numpy as np
import torch
from fastai.vision.all import set_seed

from settings import UsageError, no_gpu

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
            raise UsageError(f"--precision {precision} needs a CUDA GPU (fastai's mixed precision); use fp32 on {device}")
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
    torch.use_deterministic_algorithms(deterministic)


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def library_versions():
    """The versions a run ran with, as installed (read without importing what the run did not)."""
    installed = {name: metadata.version(name) for name in ("torchvision", "fastai", "albumentations")}
    return {"python": platform.python_version(), "torch": torch.__version__, **installed, "numpy": np.__version__,
            "cuda": torch.version.cuda}


def images_per_second(model, images, train, timed_steps=3, enough_seconds=1.0):
    """Throughput of a copy of `model` (the real one is left untouched) on the batch `images`: one
    step to pay the one-off set-up costs, then `timed_steps` steps, fewer if they take longer
    than `enough_seconds` (a full-width batch on a CPU takes tens of seconds), at least one."""
    model = copy.deepcopy(model).train(train)
    labels = torch.zeros(len(images), dtype=torch.long, device=images.device)

    def step():
        with torch.set_grad_enabled(train):
            out = model(images)
            if train:
                torch.nn.functional.cross_entropy(out, labels).backward()

    step()
    steps, start = 0, time.perf_counter()
    while steps < timed_steps and (steps == 0 or time.perf_counter() - start < enough_seconds):
        step()
        steps += 1
    return steps * len(images) / (time.perf_counter() - start)


def print_cpu_estimate(learn, model, finder_iters, epochs, final_passes):
    """How long the run will take on this CPU, timed on a batch of the run's size through the plain
    `model`: the range test's `finder_iters` (training only: it never evaluates), the `epochs`
    still to run (a training and a test pass each) and the `final_passes` over the test set
    after the fit."""
    images = learn.dls.valid.one_batch()[0].as_subclass(torch.Tensor)  # as fastai's CastToTensor hands it over
    train_rate = images_per_second(model, images, train=True)
    eval_rate = images_per_second(model, images, train=False)
    trained = (finder_iters + epochs * len(learn.dls.train)) * learn.dls.train.bs
    evaluated = (epochs + final_passes) * len(learn.dls.valid.dataset)
    seconds = trained / train_rate + evaluated / eval_rate
    duration = f"{seconds / 60:.0f} min" if seconds > 90 else f"{seconds:.0f} s"
    print(f"CPU only: this run will take about {duration} ({trained} training images at {train_rate:.0f}/s and "
          f"{evaluated} test images at {eval_rate:.0f}/s here); a GPU takes seconds")


def out_of_memory(error):
    return isinstance(error, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(error, RuntimeError) and any(message in str(error) for message in OUT_OF_MEMORY_MESSAGES))


def reports_out_of_memory(run):
    """`run(args, ...)`, where running out of memory, on the GPU or the CPU, from the model's creation
    to the last test pass, is one line naming the two flags that size the run."""
    @functools.wraps(run)
    def checked_run(args, *rest):
        try:
            return run(args, *rest)
        except (MemoryError, RuntimeError) as e:  # torch.OutOfMemoryError is a RuntimeError
            if not out_of_memory(e):
                raise
            raise UsageError(f"out of memory for CustomResNet --width {args.width} in batches of --bs {args.bs}: "
                             "lower --width (64 is the recipe) or --bs") from e
    return checked_run
