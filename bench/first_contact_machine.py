"""What the GPU machine has, as the first contact's `versions` and `data` steps find it, and the
environment each step runs in there."""
import json
import os
import re
import subprocess
import time
import warnings
from pathlib import Path


def versions(path, smoke):
    """Write what the machine has to `path`; exit status 1 where the run cannot work (no CUDA on a
    GPU machine, a package or one of our modules that does not import)."""
    import platform
    from importlib import metadata
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated")  # raised inside fastai's import
    found, problems = {"python": platform.python_version(), "cpus": os.cpu_count(),
                       "cpus_usable": len(os.sched_getaffinity(0))}, []
    shm = os.statvfs("/dev/shm") if os.path.isdir("/dev/shm") else None  # DataLoader workers share memory there
    found["dev_shm_gib"] = round(shm.f_frsize * shm.f_blocks / 2**30, 1) if shm else None
    import torch
    found.update(torch=torch.__version__, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                 cuda_available=torch.cuda.is_available())
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        x = torch.randn(1024, 1024, device="cuda", dtype=torch.bfloat16)
        found.update(device=props.name, capability=f"{props.major}.{props.minor}", gpu_mib=props.total_memory // 2**20,
                     multiprocessors=props.multi_processor_count, bf16=torch.cuda.is_bf16_supported(),
                     bf16_matmul_finite=bool(torch.isfinite((x @ x).float()).all()),
                     nvidia_smi=nvidia_smi("name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu"))
    elif not smoke:
        problems.append("no CUDA GPU visible to torch")
    packages = {name: name for name in ("torchvision", "numpy", "fastai", "fastcore", "fasttransform", "fastprogress",
                                        "albumentations", "albucore", "pydantic", "safetensors", "accelerate",
                                        "matplotlib", "pandas", "airbench")}
    packages["plum-dispatch"] = "plum"
    for distribution, module in packages.items():
        found[distribution] = importable(module, problems) and metadata.version(distribution)
    ours = {"train_fastai.py": "train_fastai", "predict.py": "predict", "bench/bench.py": "bench.bench"}
    for script, module in ours.items():  # they import everything a run needs
        found[script] = importable(module, problems) and "imports"
    found["problems"] = problems
    Path(path).write_text(json.dumps(found, indent=2) + "\n")
    for key, value in found.items():
        print(f"{key}: {value}")
    return 1 if problems else 0


def importable(module, problems):
    """Whether `module` imports; if not, why, into `problems`."""
    from importlib import import_module
    try:
        import_module(module)
        return True
    except Exception as e:  # an import that fails, whatever it raises
        problems.append(f"{module} does not import: {type(e).__name__}: {e}")
        return False


def time_data(path, data):
    """Unpack and decode the data set as the runs do, timed, and write the times to `path`."""
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated")  # raised inside fastai's import
    import torch

    from bench.tensors import data_tensors
    from cifar10_fast.data.sources import cifar10_folder
    start = time.perf_counter()
    folder = cifar10_folder(data)
    unpacked = time.perf_counter()
    tensors = data_tensors(folder, None)
    decoded = time.perf_counter()
    data_tensors(folder, None)
    cached = time.perf_counter()
    found = {"data": data, "train_images": len(tensors["train"][1]), "test_images": len(tensors["test"][1]),
             "unpack_s": round(unpacked - start, 2), "decode_s": round(decoded - unpacked, 2),
             "cached_load_s": round(cached - decoded, 2), "cpus": os.cpu_count(),
             "torch_threads": torch.get_num_threads()}
    Path(path).write_text(json.dumps(found, indent=2) + "\n")
    print(json.dumps(found))
    return 0


# ---------------------------------------------------------------------------------------------
# The machine's name, home and environment.

def device_label(smoke):
    """The GPU's name as the bench names its results files (nvidia-h200), from nvidia-smi: the
    driver names its log before torch is installed."""
    name = "cpu-smoke" if smoke else nvidia_smi("name") or "no-gpu"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def nvidia_smi(query):
    """The first GPU's line of `nvidia-smi --query-gpu=QUERY`, or None without one."""
    try:
        done = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = done.stdout.strip().splitlines() if done.returncode == 0 else []
    return lines[0] if lines else None


def writable_home(scratch):
    """The home folder, or a scratch one where it cannot be written (the wheels and the data cache go there)."""
    home = Path.home()
    if os.access(home, os.W_OK):
        return home
    (scratch / "home").mkdir(exist_ok=True)
    return scratch / "home"


def step_environment(home, site, cache, data):
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": os.pathsep.join(filter(None, [str(site),
           os.environ.get("PYTHONPATH")])), "CIFAR10_CACHE": str(cache), "CIFAR10_DATA": data,
           "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg", "NO_ALBUMENTATIONS_UPDATE": "1",  # no network there
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_ROOT_USER_ACTION": "ignore"}
    return env
