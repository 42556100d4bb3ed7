"""CUDA faked on the CPU: the code that only a GPU runs, run and checked here.

Every tensor a run puts on "cuda" stays a real CPU tensor, but its storage is marked as a GPU's, and
every torch call sees it as one: `.device` is cuda:0, `.is_cuda` is true, `.numpy()` refuses it as
torch does. Values are real, so the range test finds real LRs and the loss really falls; backward
and the optimizer run for real too. Two interposers watch everything:
- a TorchFunctionMode at the Python API: where a tensor moves (to, cuda, cpu, a factory given
  device="cuda", torch.load onto the GPU, a CUDA generator) and what the host reads whole (tolist);
- a TorchDispatchMode below autograd: every operator, those of backward and of the fused optimizer
  included, is checked for its tensors' devices, and host reads of single values (item, float,
  bool, `if tensor:`) are seen as the `_local_scalar_dense` they dispatch.

What a GPU would refuse is an error at once (`NotOnAGpu`), naming the line that did it:
- an operator given CUDA and CPU tensors together: a 0-dim CPU tensor too (some CUDA kernels take it
  as a scalar, others assert, `lerp` among them), and an index on the GPU into a CPU tensor; a CPU
  index into a CUDA tensor is a host-to-device copy instead, as torch makes it;
- `numpy()` of a CUDA tensor, and a generator of the wrong device for a random op.
What would make the host wait, or cost a copy, is recorded by phase (`events`), and inside a fit's
training batches it is an error too: a host read of a CUDA tensor, a copy either way between host
and device, torch.cuda.synchronize. While `torch.cuda.set_sync_debug_mode("error")` is on (the
run's --sync-debug) each of those is an error wherever it happens, as on a GPU.

What this cannot see, because no GPU runs: autocast("cuda") casts nothing (the tensors are CPU
tensors underneath, so a bf16 run computes in fp32 here); no kernel's speed, memory or cuDNN
choice; copies made inside C++ without an operator (torch.save of CUDA tensors, deepcopy); streams
and events; the numbers of the CUDA random generator (a CPU generator draws in its place).

It uses torch's private dispatch interposer (torch.utils._python_dispatch); the tests that use it
skip where that is missing.
"""
import re
import traceback
import weakref
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch
from fastai.vision.all import Callback, GatherPredsCallback, Recorder
from torch.overrides import TorchFunctionMode

from cifar10_fast.core import settings

try:
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves
    MISSING = None
except ImportError as e:  # private torch APIs: the tests skip without them, naming what is missing
    TorchDispatchMode, MISSING = object, str(e)  # object: the classes below still define

CUDA, CPU = torch.device("cuda", 0), torch.device("cpu")
in_use = None  # the FakeCuda entered last: PhaseStart and PhaseEnd report to it
# The storages on the GPU. One GPU for the whole process, as a real one: a tensor made on it under
# one FakeCuda (and cached, as augment.arange caches its ranges) is still there under the next.
GPU_STORAGES = weakref.WeakSet()
REPO = Path(__file__).resolve().parents[1]
REAL_GENERATOR = torch.Generator
# The operator whose CPU tensors a CUDA kernel takes as they are: the indices of an index into a
# CUDA tensor (torch copies them to the device first).
INDEXING = "index.Tensor"
# Frames that only pass a call on: torch's, fastai's tensor types', fasttransform's and this file's.
PASSING_FRAMES = re.compile(r"(/torch/|fastai/torch_core\.py$|/fasttransform/|fake_cuda\.py$)")
HOST_READ, TO_DEVICE, TO_HOST, WAIT = "host read", "host to device copy", "device to host copy", "host waits"


class NotOnAGpu(AssertionError):
    """What a GPU would refuse, or what the check forbids where it happened."""


def caller():
    """Where the code under test did it: the innermost frame that is not only passing the call on,
    and the innermost frame of this project's own files where that is another."""
    stack = [frame for frame in reversed(traceback.extract_stack()) if not PASSING_FRAMES.search(frame.filename)]
    ours = next((frame for frame in stack if Path(frame.filename).parent in (REPO, REPO / "bench")), None)
    frames = [stack[0]] if stack else []
    if ours is not None and ours is not frames[0]:
        frames.append(ours)
    return ", from ".join(f"{Path(frame.filename).name}:{frame.lineno} {frame.name}" for frame in frames) or "?"


class FakeCuda:
    """`with FakeCuda() as gpu:` runs its block as if one CUDA GPU were there.

    `gpu.events` lists (phase, kind, what, where) for every host read, host/device copy and wait;
    `gpu.phase` names the part of the run they fall in ("setup" until `PhaseStart` says otherwise);
    while `gpu.in_training_batches` is set, each of them is an error."""

    def __init__(self, bf16=True):
        self.bf16 = bf16  # whether the GPU has bf16, as an A100 or H100 has and a V100 has not
        self.events, self.phase, self.in_training_batches = [], "setup", False
        self.sync_debug_mode, self.recording = 0, True
        self.violations = []  # every NotOnAGpu raised, in case the code under test swallowed one

    def on_gpu(self, tensor):
        try:
            return tensor.untyped_storage() in GPU_STORAGES
        except (RuntimeError, NotImplementedError):  # a tensor with no storage of its own
            return False

    def move_to_gpu(self, tensors):
        for tensor in tree_leaves(tensors):
            if isinstance(tensor, torch.Tensor):
                GPU_STORAGES.add(tensor.untyped_storage())
        return tensors

    def move_to_host(self, tensor):
        GPU_STORAGES.discard(tensor.untyped_storage())
        return tensor

    def refuse(self, message):
        error = NotOnAGpu(f"{message} (at {caller()}; phase: {self.phase})")
        self.violations.append(str(error))
        raise error

    def record(self, kind, what):
        """A host read, a copy between host and device, or a wait for the GPU."""
        if not self.recording:
            return
        self.events.append((self.phase, kind, what, caller()))
        if self.sync_debug_mode == 2:
            self.refuse(f"{kind} ({what}) while torch.cuda.set_sync_debug_mode('error') is on: "
                        "called a synchronizing CUDA operation")
        if self.in_training_batches:
            self.refuse(f"{kind} ({what}) inside the training batches")

    def count(self, phase=None, kind=None):
        return sum((phase in (None, p)) and (kind in (None, k)) for p, k, _, _ in self.events)

    def __enter__(self):
        global in_use
        in_use = self
        if MISSING:
            raise RuntimeError(f"this torch cannot fake CUDA: {MISSING}")
        self.stack = ExitStack()
        self.stack.enter_context(patched_torch_cuda(self))
        self.stack.enter_context(DeviceCalls(self))
        self.stack.enter_context(OperatorChecks(self))
        return self

    def __exit__(self, *exc):
        self.stack.close()
        return False


class PhaseStart(Callback):
    """Tells the fake GPU in use where a run is: the phase ("range test", "fit", "predictions" (fastai's
    get_preds), "after ..."), and when a fit's training batches start, before any other callback's
    before_train (never in the LR range test, whose fastai LRFinder reads the loss every iteration
    by design). It holds no reference to the GPU, so that an exported learner pickles it as a name."""
    order = -1000

    def before_fit(self):
        in_use.phase = ("range test" if hasattr(self.learn, "lr_finder") else
                        "predictions" if any(isinstance(cb, GatherPredsCallback) for cb in self.learn.cbs) else "fit")

    def before_train(self):
        in_use.in_training_batches = not hasattr(self.learn, "lr_finder")

    def after_fit(self):
        in_use.phase = f"after the {in_use.phase}"


class PhaseEnd(Callback):
    """The end of the training batches, before the Recorder reads the epoch's values in after_train."""
    order = Recorder.order - 1

    def after_train(self):
        in_use.in_training_batches = False

    after_cancel_train = after_train


class FakeCudaGenerator(REAL_GENERATOR):
    """torch.Generator(device="cuda"): a CPU generator that says it is a CUDA one (a real one
    needs a GPU to exist)."""

    def __new__(cls, device="cpu"):
        generator = REAL_GENERATOR.__new__(cls, device="cpu")
        generator.fake_device = torch.device(device)
        return generator

    def __init__(self, device="cpu"):
        pass

    @property
    def device(self):
        return self.fake_device


class FakeStream:
    """The default stream, never capturing a CUDA graph (torch's AdamW asks)."""

    def is_capturing(self):
        return False


def asks_for_cuda(device):
    return isinstance(device, (str, torch.device)) and torch.device(device).type == "cuda"


class DeviceCalls(TorchFunctionMode):
    """The Python API of tensors, as CUDA would answer it for those on the GPU."""

    FROM_HOST = {torch.tensor, torch.as_tensor, torch.Tensor.new_tensor}  # given the host's data to copy over

    def __init__(self, gpu):
        super().__init__()
        self.gpu = gpu

    def __torch_function__(self, func, types, args=(), kwargs=None):
        gpu, kwargs = self.gpu, dict(kwargs or {})
        if func is torch._C._nn._parse_to:  # reads a device, makes no tensor
            return func(*args, **kwargs)
        if func == torch.Tensor.device.__get__:
            return CUDA if gpu.on_gpu(args[0]) else CPU
        if func == torch.Tensor.is_cuda.__get__:
            return gpu.on_gpu(args[0])
        if func is torch.Tensor.get_device:
            return 0 if gpu.on_gpu(args[0]) else -1
        if func in (torch.Tensor.numpy, torch.Tensor.__array__) and gpu.on_gpu(args[0]):
            gpu.refuse("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor to "
                       "host memory first")
        if func is torch.Tensor.tolist and gpu.on_gpu(args[0]):
            gpu.record(HOST_READ, f"tolist of {tuple(args[0].shape)}")
            return func(*args, **kwargs)
        if func is torch.Tensor.pin_memory:  # page-locked host memory, for copies to the GPU: the host's here
            return args[0]
        if func is torch.Tensor.cuda:
            return self.move(args[0], CUDA, lambda tensor: tensor)
        if func is torch.Tensor.cpu:
            return self.move(args[0], CPU, lambda tensor: tensor)
        if func is torch.Tensor.to:
            device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*args[1:], **kwargs)
            if len(args) > 1 and isinstance(args[1], torch.Tensor):
                device = CUDA if gpu.on_gpu(args[1]) else CPU
            copy = kwargs.get("copy", False)
            return self.move(args[0], device, lambda tensor: tensor.to(
                CPU, dtype or tensor.dtype, non_blocking, copy, memory_format=memory_format or torch.preserve_format))
        if kwargs.get("generator") is not None:
            self.check_generator(kwargs["generator"], kwargs.get("device"), args)
        if asks_for_cuda(kwargs.get("device")):
            kwargs["device"] = CPU
            if func in self.FROM_HOST:
                gpu.record(TO_DEVICE, func.__name__)
            return gpu.move_to_gpu(func(*args, **kwargs))
        return func(*args, **kwargs)

    def move(self, tensor, device, convert):
        """`tensor` moved to `device` (None: where it is) and `convert`ed, as torch does it: a copy
        where it changes device, else the conversion alone (often the tensor itself)."""
        on_gpu = self.gpu.on_gpu(tensor)
        if device is None or (device.type == "cuda") == on_gpu:
            return convert(tensor)
        what = f"{tuple(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}"
        copied = convert(tensor.clone())
        if device.type == "cuda":
            self.gpu.record(TO_DEVICE, what)
            return self.gpu.move_to_gpu(copied)
        self.gpu.record(TO_HOST, what)
        return self.gpu.move_to_host(copied)

    def check_generator(self, generator, device, args):
        wanted = "cuda" if asks_for_cuda(device) or any(
            isinstance(a, torch.Tensor) and self.gpu.on_gpu(a) for a in args) else "cpu"
        if generator.device.type != wanted:
            self.gpu.refuse(f"Expected a '{wanted}' device type for generator but found '{generator.device.type}'")


class OperatorChecks(TorchDispatchMode):
    """Every operator: its tensors on one device, its outputs where its inputs are, its host reads
    recorded."""

    def __init__(self, gpu):
        super().__init__()
        self.gpu = gpu

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        gpu, kwargs = self.gpu, kwargs or {}
        name = f"{func._opname}.{func._overloadname}"
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        on_gpu = [gpu.on_gpu(t) for t in tensors]
        if name == "copy_.default" and on_gpu[0] != on_gpu[1]:
            gpu.record(TO_DEVICE if on_gpu[0] else TO_HOST, f"copy_ of {tuple(tensors[1].shape)}")
            return func(*args, **kwargs)
        if any(on_gpu) and not all(on_gpu):
            if name == INDEXING and on_gpu[0]:
                gpu.record(TO_DEVICE, f"the CPU indices of {name}")
            else:
                devices = ", ".join(f"{'cuda' if g else 'cpu'} {tuple(t.shape)}" for t, g in zip(tensors, on_gpu))
                gpu.refuse(f"{name} mixes devices: {devices}")
        if name == "_local_scalar_dense.default" and any(on_gpu):
            gpu.record(HOST_READ, f"a {str(tensors[0].dtype).removeprefix('torch.')} value")
        out = func(*args, **kwargs)
        if any(on_gpu) and not func._schema.is_mutable:
            gpu.move_to_gpu(out)
        return out


@contextmanager
def patched_torch_cuda(gpu):
    """torch.cuda as one GPU answers it; set_sync_debug_mode as the fake GPU's own switch;
    torch.load onto the GPU; deepcopy on the GPU; torch.Generator able to make a CUDA generator;
    settings' look for a GPU before torch loads finding one."""
    modes = {"default": 0, "warn": 1, "error": 2, 0: 0, 1: 1, 2: 2}
    real_load, real_deepcopy = torch.load, torch.Tensor.__deepcopy__

    def set_sync_debug_mode(mode):
        gpu.sync_debug_mode = modes[mode]

    def synchronize(device=None):
        gpu.record(WAIT, "torch.cuda.synchronize")

    def deepcopy(tensor, memo):
        """A copy where the tensor is: torch copies the storage, whose own device (the host's, here)
        would make the copy look like one to the host."""
        gpu.recording = False
        try:
            copied = real_deepcopy(tensor, memo)
        finally:
            gpu.recording = True
        return gpu.move_to_gpu(copied) if gpu.on_gpu(tensor) else copied

    def load(f, map_location=None, **kwargs):
        """torch.load onto the GPU: restored on the host and moved."""
        if not asks_for_cuda(map_location):
            return real_load(f, map_location=map_location, **kwargs)
        gpu.record(TO_DEVICE, f"torch.load of {Path(f).name}")
        return gpu.move_to_gpu(real_load(f, map_location=CPU, **kwargs))

    cuda = dict(is_available=lambda: True, device_count=lambda: 1, current_device=lambda: 0,
                get_device_name=lambda device=None: "fake CUDA (CPU)", get_device_capability=lambda device=None: (9, 0),
                is_bf16_supported=lambda *args, **kwargs: gpu.bf16, synchronize=synchronize,
                set_sync_debug_mode=set_sync_debug_mode, get_sync_debug_mode=lambda: gpu.sync_debug_mode,
                max_memory_allocated=lambda device=None: 0, memory_allocated=lambda device=None: 0,
                reset_peak_memory_stats=lambda device=None: None, empty_cache=lambda: None,
                manual_seed_all=lambda seed: None, manual_seed=lambda seed: None,
                is_current_stream_capturing=lambda: False)  # torch 2.11's optimizers ask it, as 2.14's ask the stream
    answers = {(torch.cuda, name): answer for name, answer in cuda.items()}
    answers.update({(torch.accelerator, "current_stream"): lambda device=None: FakeStream(),
                    (torch, "load"): load, (torch, "Generator"): FakeCudaGenerator,
                    (torch.Tensor, "__deepcopy__"): deepcopy,
                    # What the tools ask, before torch loads, to refuse a GPU on a machine without one.
                    (settings, "no_cuda_here"): lambda: False})
    saved = {(module, name): getattr(module, name) for module, name in answers}
    try:
        for (module, name), answer in answers.items():
            setattr(module, name, answer)
        yield
    finally:
        for (module, name), original in saved.items():
            setattr(module, name, original)
