"""What the bench measures besides the rows' own figures: the CPU's name and the GPU's driver, the
matmul ceiling that model FLOP utilisation divides by, the model's FLOPs per image, peak GPU
memory, and a profiler window over a few training steps."""
import platform
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from fastai.vision.all import Callback, CancelFitException
from torch.utils.flop_counter import FlopCounterMode

from customresnet import CustomResNet


def cpu_name():
    """The CPU's model name, as /proc/cpuinfo gives it (Linux), else as Python's platform does."""
    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
              if line.startswith("model name")] if cpuinfo.exists() else []
    return models[0] if models else platform.processor() or platform.machine()


def driver_version():
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)
        return done.stdout.strip().splitlines()[0] if done.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_tflops(device, n, repeats=50):
    """Dense bf16 matmul throughput measured here: the ceiling that model FLOP utilisation divides by."""
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e12


def flops_per_image(width, train):
    """Model FLOPs for one image: forward, and backward too when training (torch's flop counter)."""
    model = CustomResNet(width=width).train(train)
    images = torch.randn(2, 3, 32, 32)
    with FlopCounterMode(display=False) as counter, torch.set_grad_enabled(train):
        out = model(images)
        if train:
            F.cross_entropy(out, torch.zeros(2, dtype=torch.long)).backward()
    return counter.get_total_flops() / len(images)


@contextmanager
def peak_memory(device, result):
    """Peak GPU memory allocated by torch inside the block, in MiB, into result['peak_gpu_mib']."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    yield
    result["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


class ProfileSteps(Callback):
    """Profile `steps` training batches after `warmup` others, then stop the fit."""

    def __init__(self, profiler, warmup, steps):
        self.profiler, self.warmup, self.steps, self.done = profiler, warmup, steps, 0

    def after_batch(self):
        if not self.training:
            return
        self.done += 1
        if self.done == self.warmup:
            synchronize(self.dls.device)
            self.profiler.start()
            self.start = time.perf_counter()
        elif self.done == self.warmup + self.steps:
            synchronize(self.dls.device)
            self.profiler.stop()
            self.ms_per_step = (time.perf_counter() - self.start) * 1000 / self.steps
            raise CancelFitException()
