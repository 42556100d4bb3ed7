"""airbench94: the speed record's reference trainer, the PyPI package airbench 0.1.8 (its own,
smaller net and recipe), fed our copy of the data as cifar10/train.pt and cifar10/test.pt.

airbench is imported only where this row needs it: it is optional, and its import turns on
cudnn.benchmark for the whole process."""
import os
import time
from contextlib import contextmanager

import torch

from bench.measure import peak_memory, synchronize

UNAVAILABLE_ON_CPU = ("airbench 0.1.8 trains on CUDA only (make_net94 calls .cuda(), train() times "
                      "with torch.cuda.Event)")


def write_data(data, work):
    """cifar10/train.pt and cifar10/test.pt as airbench reads them: uint8 NHWC images, int64 labels,
    class names."""
    folder = work / "cifar10"
    folder.mkdir(exist_ok=True)
    for split in ("train", "test"):
        images, labels = data[split]
        torch.save({"images": images.permute(0, 2, 3, 1).contiguous(), "labels": labels.long(),
                    "classes": data["classes"]}, folder / f"{split}.pt")
    return folder


@contextmanager
def working_directory(path):
    """airbench reads cifar10/ relative to the working directory."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def check_data(work, device):
    """Load our files through airbench's own loader: the format is airbench's, not our guess of it."""
    import airbench
    with working_directory(work):
        for train in (True, False):
            loader = airbench.CifarLoader("cifar10", train=train, gpu=device if device.type == "cuda" else "cpu")
            assert loader.images.shape[1:] == (3, 32, 32) and len(loader.labels) == len(loader.images)


def unavailable(device, work, data):
    """Why the row cannot run here, or None once our data is written, checked and airbench warmed up."""
    write_data(data, work)
    try:
        check_data(work, device)
    except ImportError:
        return "airbench is not installed: pip install airbench==0.1.8"
    if device.type != "cuda":
        return UNAVAILABLE_ON_CPU
    import airbench
    with working_directory(work):
        airbench.warmup94()  # one step, as its README does before timing: CUDA and cuDNN set-up
    return None


def run(args, device, seed, work):
    import airbench
    result = {"seed": seed}
    with peak_memory(device, result), working_directory(work):
        torch.manual_seed(seed)
        start = time.perf_counter()
        model = airbench.train94(verbose=False)
        synchronize(device)
        result["fit_s"] = time.perf_counter() - start
        test_loader = airbench.CifarLoader("cifar10", train=False, batch_size=2000)
        result["accuracy"] = airbench.evaluate(model, test_loader, tta_level=2)  # as its 94.01% is measured
        result["accuracy_no_tta"] = airbench.evaluate(model, test_loader, tta_level=0)
        result["total_s"] = time.perf_counter() - start
    epochs = airbench.lib_airbench94.hyp["opt"]["train_epochs"]
    result["images_per_s"] = epochs * args.train_images / result["fit_s"]
    return result
