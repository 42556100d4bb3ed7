"""Several processes: `accelerate launch` (or torchrun) starts the script once per GPU, and
fastai's `distrib_ctx` trains them data-parallel. Alone, a run never touches any of this."""
import atexit
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from accelerate import PartialState
from fastai.torch_core import num_distrib

from cifar10_fast.core.internals import broadcast_epoch_order_with


def join_processes(device):
    """(number of processes, this process's device): 1 and `device` when run alone; under
    `accelerate launch` this process joins the others' group and takes its own GPU."""
    if num_distrib() <= 1:
        return 1, device
    state = PartialState(cpu=device.type == "cpu")
    if not state.is_main_process:
        sys.stdout = open(os.devnull, "w")  # one process tells the user what happens
    if device.type == "cpu":
        broadcast_epoch_order_with(broadcast_on_cpu)
        return state.num_processes, device  # accelerate would say cpu:0
    return state.num_processes, state.device


def broadcast_on_cpu(self, values, rank):
    """fastai's DistributedDL sends each epoch's sample order from rank 0 as a CUDA tensor, which
    NCCL needs; gloo (processes on CPUs) needs a CPU tensor."""
    values = torch.tensor(values, dtype=torch.long)
    torch.distributed.broadcast(values, rank)
    return values.tolist()


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


def scratch_folder():
    """Where a process other than the main one writes: all run the same code, and only the main
    process leaves files."""
    scratch = tempfile.mkdtemp(prefix="cifar10-fast-process-")
    atexit.register(shutil.rmtree, scratch, True)
    return Path(scratch)


def split_batches(learn, processes):
    """Each of the processes takes 1/processes of every batch: --bs stays the batch one
    optimizer step sees (the effective batch), so the recipe's LRs and the LR rule hold as they are."""
    if processes > 1:
        learn.dls.loaders = [dl.new(bs=dl.bs // processes) for dl in learn.dls.loaders]
