"""Every use of a library's private name, each through one helper here, checked against the versions
it was tried with. A release may rename or drop any of them without notice; an untried version is
then one line naming the range, before anything runs, rather than an AttributeError at the first
batch. tests/core/test_internals.py checks each helper against the installed libraries.

The helpers take the objects they reach into, or import them when called: nothing here loads torch.
"""
import atexit
import functools
import os
import platform
import re
import sys
import types
from importlib import metadata

from cifar10_fast.core.errors import BadInput

# [lowest, beyond): the versions each library's private names were tried with (the GPU machine's
# torch 2.11 and Python 3.12, and the pins).
TRIED = {"python": ((3, 11), (3, 15)), "torch": ((2, 11), (2, 15)), "fastai": ((2, 8, 12), (2, 9))}
# What to do about an untried version.
NEEDED_FIX = "install the versions requirements.txt pins (make setup)"


class UntriedVersion(BadInput):
    """A library whose private names this project reaches into, at a version it was not tried with."""


def installed(library):
    """The installed version of `library` ("python": this interpreter's), as text."""
    return platform.python_version() if library == "python" else metadata.version(library)


def release(version):
    """(2, 8, 12) for "2.8.12", "2.11.0+cu128" or "2.15.0.dev20260101"."""
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


def span(bounds):
    return ".".join(map(str, bounds))


@functools.cache
def check(library, use):
    """Refuse an untried `library` for `use` (what reaches into it): one line naming the range."""
    lowest, beyond = TRIED[library]
    version = installed(library)
    if not lowest <= release(version) < beyond:
        raise UntriedVersion(f"{library} {version} is installed, but {use} was tried with {library} {span(lowest)} "
                             f"up to before {span(beyond)}: {NEEDED_FIX}")


def private(owner, name, library):
    """`owner.name`, a private name of `library`, its version checked, and its absence one line."""
    use = f"{(owner if isinstance(owner, (type, types.ModuleType)) else type(owner)).__name__}.{name}"
    check(library, use)
    try:
        return getattr(owner, name)
    except AttributeError:
        raise UntriedVersion(f"{library} {installed(library)} has no {use}: {NEEDED_FIX}") from None


# ---------------------------------------------------------------------------------------------
# fastai

def dataloader_order(dl):
    """The order fastai's DataLoader drew for the epoch it is serving: DataLoader.__iter__ keeps what
    get_idxs returned in a name-mangled attribute, which its sample() reads an item at a time.
    data.device_loader hands it on whole instead."""
    return private(dl, "_DataLoader__idxs", "fastai")


def overrides_private(owner, library="fastai"):
    """A decorator for a subclass's method that replaces `owner`'s private method of the same name
    (fastai calls it under that name): checked when the subclass is defined, at import."""
    def check_name(method):
        private(owner, method.__name__, library)
        return method
    return check_name


def fastai_unused_imports():
    """The modules fastai's own modules import at their top for functions a run never calls, with
    the names bound from them as they load (`from M import name`): what training.deferred_imports
    stands in for. fastai.data.transforms imports sklearn.model_selection for train_test_split,
    fastai.metrics and fastai.interpret sklearn.metrics and scipy.stats, fastai.imports
    scipy.ndimage and requests."""
    check("fastai", "the list of fastai's imports that deferred_imports stands in for")
    return {"sklearn": (), "sklearn.metrics": (), "sklearn.model_selection": ("train_test_split",),
            "scipy.stats": (), "scipy.ndimage": (), "requests": ()}


def broadcast_epoch_order_with(broadcast):
    """fastai's DistributedDL sends each epoch's order from the main process through its private
    _broadcast, as a CUDA tensor (NCCL's); `broadcast(self, values, rank)` replaces it in this
    process (training.distributed: processes on CPUs, gloo's)."""
    from fastai.distributed import DistributedDL
    private(DistributedDL, "_broadcast", "fastai")
    DistributedDL._broadcast = broadcast


# ---------------------------------------------------------------------------------------------
# torch

def compile_seconds():
    """Seconds torch.compile has spent compiling in this process so far, forward and backward graphs
    (torch._dynamo's own account); 0 where nothing was compiled, without loading the compiler to ask."""
    if "torch._dynamo" not in sys.modules:
        return 0.0
    from torch._dynamo import utils
    return private(utils, "calculate_time_spent", "torch")()["total_wall_time"]


def uncompiled(model):
    """The module under a torch.compile'd one (torch keeps it as `_orig_mod`), or `model` itself."""
    if type(model).__name__ != "OptimizedModule":
        return model
    return private(model, "_orig_mod", "torch")


# ---------------------------------------------------------------------------------------------
# Python

def exit_without_teardown(status=0):
    """End the process now: the exit handlers run (file locks, worker processes, temporary files)
    and the output is flushed, but the interpreter's teardown of every library's objects, a second
    of a run on 2 cores that nothing a user keeps needs, is skipped."""
    private(atexit, "_run_exitfuncs", "python")()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:  # its reader gone (a closed pipe): what it held is nobody's now
            pass
    os._exit(status)
