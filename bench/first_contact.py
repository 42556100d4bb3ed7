"""The first contact with a lent GPU machine: one prepared command that proves the most in about
eight minutes and brings back what the device tool can bring back.

The GPU machine is lent to some sessions only, for 15 minutes of device time in all (its start of
a minute or more included), at most 10 minutes a command, and it brings back at most 8 files of at
most 16 MiB each, no more than 2 folders below $OUT. Nobody can try the command there first, so
it runs its steps in the order of what they prove, each within its own time budget; a step that
no longer fits in the time left is skipped, a failure stops only its own step, and the log grows
on disk line by line, so that it comes back even if the command is killed:

    install       the wheels in .carry/ into ~/.cache (reused while the machine stays warm)
    versions      Python, torch, CUDA, the GPU, fastai, albumentations, airbench; our modules import
    data          unpack and decode the JPEG copy, timed, into the cache that every later step reads
    sync-debug    train_fastai.py --epochs 2 --sync-debug --tta: no host sync in a training batch
    recipe        train_fastai.py --epochs 24: the recipe, whole
    reference     bench/reference.py on that run: the reference checkpoint
    bench-1epoch  bench/bench.py, every row for one epoch, with --profile
    bench-seeds   with the time left: airbench94 and ours, 2 seeds each, at full length

    python -m bench.first_contact --prepare     # here, once: the wheels and the data into .carry/
    python3 -m bench.first_contact              # there, through the device tool (BENCHMARKS.md)
    python -m bench.first_contact --smoke --data DIR_OR_TGZ --out DIR   # tiny, on a CPU: tests it

What comes back under $OUT lies where the repository keeps it, to be copied in and committed:

    bench/results/first-contact-<device>-<date>.log    every step's output, as it came
    bench/results/first-contact-<device>-<date>.json   each step's status and seconds, the versions,
                      the data timings, and the sync-debug and recipe runs' config, summary, history
    bench/results/<device>-<date>-1epoch.json, <device>-<date>-1epoch-profile.txt    bench-1epoch
    bench/results/<device>-<date>.json, <device>-<date>.log                          bench-seeds
    models/customresnet-cifar10.safetensors, models/customresnet-cifar10.json         reference

Everything else (run folders, exports, the bench's scratch) stays in a scratch folder outside
$OUT. Paths of the machine in what comes back are written as $SCRATCH, $CIFAR10_CACHE, $SITE,
$OUT, ~ and . (the checkout).

The driver itself needs nothing beyond Python's standard library (and the checkout's settings.py
and errors.py, which need nothing more): it runs before anything is installed.
"""
import argparse
import csv
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[1]

from cifar10_fast.core import settings  # noqa: E402  (the standard library only)
from cifar10_fast.core.errors import BadInput, one_line_errors  # noqa: E402

BUDGET_S = 450  # the driver's own: the device call's timeout_s is 480, and a rerun must still fit in 15 minutes
KILL_GRACE_S = 5  # from SIGTERM to SIGKILL for a step past its budget
# What the device tool brings back from $OUT, and what it takes along.
RETURN_FILES, RETURN_FILE_MIB, RETURN_DEPTH = 8, 16, 2
RETURN_NAME = re.compile(r"[A-Za-z0-9._-]+")
TRAVEL_MIB = 64
CARRY = REPO / ".carry"
DATA = ".carry/cifar10-jpeg.tgz"  # relative to the checkout, as the results record it
WHEELS = ("wheels-py312", "wheels-py312-albumentations", "wheels-peers")  # ../shared/device/README.md
DEVICE_CALL = 'command "python3 -m bench.first_contact", carry [".carry"], timeout_s 480'
# What the smoke form adds to the GPU commands (a later flag wins): tiny and on the CPU, with given
# LRs. The range test's 100 iterations take minutes on a busy CPU, and fewer find no LR on tiny
# data; the bench's ours runs one per seed, so the smoke benches leave ours out (tests/test_bench.py
# runs it).
SMOKE_LRS = ("--lr-min", "1e-4", "--lr-max", "1e-3")
SMOKE_TRAIN = ("--device", "cpu", "--width", "8", "--bs", "16", "--epochs", "1", *SMOKE_LRS)
SMOKE_BENCH = ("--smoke", "--epochs", "1", *SMOKE_LRS)
# A shared CPU runs even tiny steps slowly (their imports alone take seconds): the smoke form gives
# every step this many times its budget. The budgets themselves are tested with steps of its own.
SMOKE_SLACK = 5


class StepError(Exception):
    """A step that cannot start, said in one line."""


@dataclass
class Context:
    """What every step reads: where things go, the data, the environment of its commands, and the
    record that becomes the .json."""
    out: Path
    scratch: Path
    data: str
    smoke: bool
    stem: str  # first-contact-<device>-<date>
    site: Path
    env: dict  # the commands' environment
    plain: Callable[[str], str] = str  # text with the machine's paths as placeholders
    record: dict = field(default_factory=dict)
    python: str = sys.executable

    @property
    def results(self):
        return self.out / "bench" / "results"


@dataclass
class Step:
    name: str
    proves: str
    budget_s: float  # the most it may take: stopped beyond it
    needs_s: float  # the least time left worth starting it with
    argv: Callable[[Context], Optional[list]]  # its command, built as it starts; None: nothing to do
    collect: Optional[Callable[[Context, str], None]] = None  # what it brings back, whatever its end
    smoke_argv: tuple = ()  # added to its command in the smoke form, which says so
    smoke_skip: Optional[str] = None  # why the smoke form skips it
    after: Optional[str] = None  # the step whose output it needs


# ---------------------------------------------------------------------------------------------
# The log: on disk line by line, machine paths as placeholders.

class Log:
    """Each line into the file at once and onto the screen (the device tool's reply shows the end
    of the output), stamped with the seconds since the start and the step it comes from."""

    def __init__(self, path, placeholders, clock):
        self.file = open(path, "a", buffering=1)
        self.placeholders = sorted(((str(k), v) for k, v in placeholders.items()), key=lambda kv: -len(kv[0]))
        self.clock, self.start = clock, clock()
        self.lock = threading.Lock()

    def plain(self, text):
        for path, placeholder in self.placeholders:
            text = text.replace(path, placeholder)
        return text

    def __call__(self, text, step=""):
        line = self.plain(f"[{self.clock() - self.start:6.1f} s] {step:<12} {text.rstrip()}")
        with self.lock:
            self.file.write(line + "\n")  # line-buffered: on disk at once
            print(line, flush=True)

    def close(self):
        self.file.close()


# ---------------------------------------------------------------------------------------------
# Running the steps in order, each within its budget.

class Driver:
    def __init__(self, ctx, steps, log, budget_s=BUDGET_S, clock=time.monotonic):
        self.ctx, self.steps, self.log, self.clock = ctx, steps, log, clock
        self.deadline = clock() + budget_s
        self.slack = SMOKE_SLACK if ctx.smoke else 1
        self.current = None  # the running step's process

    def run(self, selected=None):
        """Every step of `selected` (default all) in order; returns {name: status}."""
        statuses = {}
        self.ctx.record["steps"] = []
        for step in self.steps:
            if selected is not None and step.name not in selected:
                continue
            entry = {"name": step.name, "proves": step.proves, "budget_s": step.budget_s * self.slack,
                     "status": "running", "reason": None, "seconds": None, "returncode": None, "command": None}
            self.ctx.record["steps"].append(entry)  # on disk while it runs too: a killed command says where it was
            self.run_step(step, entry, statuses)
            statuses[step.name] = entry["status"]
            self.save()
        return statuses

    def run_step(self, step, entry, statuses):
        """Run `step`, or skip it, saying why; its status, reason, seconds and command into `entry`."""
        left = self.deadline - self.clock()
        if self.ctx.smoke and step.smoke_skip:
            entry["reason"] = f"smoke: {step.smoke_skip}"
        elif step.after and statuses.get(step.after) != "ok":
            entry["reason"] = f"needs {step.after}, which did not finish ({statuses.get(step.after, 'not run')})"
        elif left < step.needs_s * self.slack:
            entry["reason"] = f"needs {step.needs_s * self.slack:.0f} s, {max(left, 0):.0f} s of the budget left"
        if entry["reason"]:
            entry["status"] = "skipped"
            self.log(f"== skipped: {entry['reason']}", step.name)
            return
        limit = entry["budget_s"] = round(min(step.budget_s * self.slack, left), 1)  # the budget it runs under
        self.save()
        self.log(f"== start: {step.proves} (budget {limit:.0f} s of {left:.0f} s left)", step.name)
        if self.ctx.smoke and step.smoke_argv:
            self.log(f"smoke: its command with {' '.join(step.smoke_argv)} added", step.name)
        start = self.clock()
        try:
            argv = step.argv(self.ctx)
            if argv is not None and self.ctx.smoke:
                argv = [*argv, *step.smoke_argv]
            if argv is None:
                entry["status"], entry["returncode"] = "ok", 0
                self.log("nothing to do", step.name)
            else:
                entry["command"] = self.log.plain(subprocess.list2cmdline(argv))
                self.log(f"$ {entry['command']}", step.name)
                entry["returncode"] = self.execute(argv, limit, step.name)
                entry["status"] = ("timed out" if entry["returncode"] is None else
                                   "ok" if entry["returncode"] == 0 else "failed")
        except StepError as e:
            entry["status"], entry["reason"] = "failed", str(e)
            self.log(f"error: {e}", step.name)
        entry["seconds"] = round(self.clock() - start, 1)
        if step.collect:
            try:
                step.collect(self.ctx, entry["status"])
            except Exception as e:  # what it could not bring back is said, and the next step runs
                entry["collect_error"] = self.log.plain(f"{type(e).__name__}: {e}")
                self.log(f"could not bring its output back: {entry['collect_error']}", step.name)
        timed_out = f" after its {limit:.0f} s" if entry["status"] == "timed out" else ""
        self.log(f"== {entry['status']}{timed_out} in {entry['seconds']:.1f} s"
                 + (f" (exit status {entry['returncode']})" if entry["status"] == "failed" else ""), step.name)

    def execute(self, argv, limit, name):
        """Run `argv` in the checkout, its output into the log line by line; its exit status, or
        None when it was stopped at `limit` seconds. It runs in its own process group, so that
        stopping it stops its DataLoader workers too."""
        proc = subprocess.Popen(argv, cwd=REPO, env=self.ctx.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace", process_group=0)
        self.current = proc
        reader = threading.Thread(target=self.copy_output, args=(proc, name), daemon=True)
        reader.start()
        try:
            returncode = proc.wait(timeout=max(limit - 0.05, 0.01))
        except subprocess.TimeoutExpired:
            self.log(f"over its budget of {limit:.0f} s: stopping it", name)
            returncode = None
        finally:
            stop(proc)
            self.current = None
        reader.join(timeout=5)
        return returncode

    def copy_output(self, proc, name):
        for line in proc.stdout:
            self.log(line, name)

    def save(self):
        write_record(self.ctx)


def stop(proc):
    """End a step's process group: SIGTERM, then SIGKILL after a grace. Also run on a step that
    finished by itself, for what it may have left running. A process stuck in the GPU driver may
    not die at once: the next step goes on after a while regardless."""
    signal_group(proc, signal.SIGTERM)
    for grace in (KILL_GRACE_S, 30):
        try:
            proc.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            signal_group(proc, signal.SIGKILL)
    signal_group(proc, signal.SIGKILL)


def signal_group(proc, sig):
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):  # the group has gone already
        pass


# ---------------------------------------------------------------------------------------------
# The steps.

def wheels():
    return sorted(p for folder in WHEELS for p in (CARRY / folder).glob("*.whl"))


def installed_marker(ctx):
    """Names the wheels' names and sizes: a warm machine with the same wheels installs nothing."""
    key = hashlib.sha1("".join(f"{p.name}:{p.stat().st_size};" for p in wheels()).encode()).hexdigest()[:12]
    return ctx.site / f".installed-{key}"


def install_argv(ctx):
    if not wheels():
        raise StepError(f"no wheels in {CARRY.name}/{{{','.join(WHEELS)}}}: run `python -m bench.first_contact "
                        "--prepare` on the development machine first")
    if installed_marker(ctx).exists():
        return None
    return [ctx.python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
            "--upgrade", "--target", str(ctx.site), *map(str, wheels())]


def collect_install(ctx, status):
    if status == "ok":
        installed_marker(ctx).touch()


def collect_json(key, name):
    """A step that writes <scratch>/<name>: its content into the record under `key`."""
    def collect(ctx, status):
        path = ctx.scratch / name
        if path.is_file():
            ctx.record[key] = json.loads(path.read_text())
    return collect


def train_argv(name, *flags):
    def argv(ctx):
        return [ctx.python, "train_fastai.py", *flags, "--data", ctx.data, "--out", str(ctx.scratch / "runs"),
                "--name", name, "--debug"]
    return argv


def run_folder(ctx, name):
    found = sorted((ctx.scratch / "runs").glob(f"*-{name}"))
    return found[-1] if found else None


def read_table(path):
    """A CSV file as a list of rows, numbers as numbers."""
    def value(text):
        try:
            return float(text)
        except ValueError:
            return text  # the time column, "00:03"
    with open(path, newline="") as f:
        return [{k: value(v) for k, v in row.items()} for row in csv.DictReader(f)]


def collect_run(key, name, files):
    """A training run's files, gathered into the record under `key`: the run folder stays behind."""
    def collect(ctx, status):
        run_dir = run_folder(ctx, name)
        if run_dir is None:
            return
        gathered = {"run": run_dir.name}
        for file in files:
            path = run_dir / file
            if path.is_file():
                gathered[path.stem] = read_table(path) if path.suffix == ".csv" else json.loads(path.read_text())
        ctx.record[key] = gathered
    return collect


def reference_argv(ctx):
    run_dir = run_folder(ctx, "reference")
    if run_dir is None:
        raise StepError("the recipe step left no run folder")
    return [ctx.python, "-m", "bench.reference", str(run_dir), "--models", str(ctx.scratch / "models"), "--debug"]


def collect_reference(ctx, status):
    for path in sorted((ctx.scratch / "models").glob("customresnet-cifar10.*")):
        bring_back(ctx, path, ctx.out / "models" / path.name)


def bench_argv(folder, *flags):
    def argv(ctx):
        return [ctx.python, "-m", "bench.bench", *flags, "--data", ctx.data, "--out", str(ctx.scratch / folder), "--debug"]
    return argv


def collect_bench(folder, suffix, extras):
    """The bench's results file, and the files beside it named `extras` ("-profile.txt", ".log"),
    into bench/results/ as <its stem><suffix>...: rewritten after every run, so a bench stopped at
    its budget brings back what it finished."""
    def collect(ctx, status):
        for results in sorted((ctx.scratch / folder).glob("*.json")):
            for extra in (".json", *extras):
                path = results.with_name(results.stem + extra)
                if path.is_file():
                    bring_back(ctx, path, ctx.results / f"{results.stem}{suffix}{extra}")
    return collect


STEPS = [
    Step("install", "the wheels installed for the GPU machine's Python", 90, 10, install_argv, collect_install,
         smoke_skip="this environment's own packages (the wheels are the GPU machine's, for Python 3.12)"),
    Step("versions", "torch, CUDA and the GPU; fastai, albumentations, airbench and our modules import", 60, 10,
         lambda ctx: [ctx.python, "-m", "bench.first_contact", "--versions", str(ctx.scratch / "versions.json")],
         collect_json("versions", "versions.json"), smoke_argv=("--smoke",)),
    Step("data", "the JPEG copy unpacked and decoded, timed, and cached for every later step", 150, 20,
         lambda ctx: [ctx.python, "-m", "bench.first_contact", "--time-data", str(ctx.scratch / "data.json"),
                      "--data", ctx.data],
         collect_json("data", "data.json")),
    Step("sync-debug", "no host-GPU sync in a training batch; the range test, flip TTA and every output run", 120, 30,
         train_argv("sync-debug", "--epochs", "2", "--sync-debug", "--tta"),
         collect_run("sync_debug", "sync-debug", ["config.json", "summary.json"]), smoke_argv=SMOKE_TRAIN),
    Step("recipe", "the 24-epoch recipe, whole: fit seconds and final accuracy", 180, 60,
         train_argv("reference", "--epochs", "24"),
         collect_run("recipe", "reference", ["config.json", "summary.json", "history.csv", "lr_find.json"]),
         smoke_argv=SMOKE_TRAIN),
    Step("reference", "the reference checkpoint from the recipe run (fp16, under 16 MiB)", 45, 10,
         reference_argv, collect_reference, after="recipe"),
    # The rows whose results are rewritten first are those a crash of a later one cannot take back:
    # the per-item rows, with their DataLoader workers, come last.
    Step("bench-1epoch", "every bench row for one epoch, and the profile of ours' training steps", 150, 60,
         bench_argv("bench-1epoch", "--rows", "ours,airbench94,seed-style,fastai-stock", "--epochs", "1", "--seeds",
                    "1", "--baseline-seeds", "1", "--profile"),
         collect_bench("bench-1epoch", "-1epoch", ["-profile.txt"]),
         smoke_argv=("--rows", "seed-style,fastai-stock,airbench94", *SMOKE_BENCH)),
    # airbench94 first: its two runs take seconds, and the recipe step has one run of ours already.
    Step("bench-seeds", "airbench94 and ours at full length, 2 seeds each: the figures to quote", 600, 60,
         bench_argv("bench-seeds", "--rows", "airbench94,ours", "--seeds", "2"),
         collect_bench("bench-seeds", "", [".log"]), smoke_argv=("--rows", "airbench94", *SMOKE_BENCH)),
]
STEP_NAMES = [step.name for step in STEPS]


# ---------------------------------------------------------------------------------------------
# What comes back.

def bring_back(ctx, source, target):
    """Copy `source` to `target` under $OUT; text with the machine's paths as placeholders."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.suffix in (".json", ".log", ".txt", ".csv"):
        target.write_text(ctx.plain(source.read_text(errors="replace")))
    else:
        shutil.copyfile(source, target)


def returned_files(out):
    """Every file under `out` as (path relative to it, bytes)."""
    return sorted((str(p.relative_to(out)), p.stat().st_size) for p in out.rglob("*") if p.is_file())


def return_problems(out):
    """What the device tool would leave behind: too many files, too large, too deep, odd names."""
    files = returned_files(out)
    problems = [f"{len(files)} files: at most {RETURN_FILES} come back"] if len(files) > RETURN_FILES else []
    for name, size in files:
        parts = Path(name).parts
        if size > RETURN_FILE_MIB * 2**20:
            problems.append(f"{name}: {size / 2**20:.1f} MiB, over {RETURN_FILE_MIB} MiB")
        if len(parts) - 1 > RETURN_DEPTH:
            problems.append(f"{name}: {len(parts) - 1} folders down, over {RETURN_DEPTH}")
        if not all(RETURN_NAME.fullmatch(part) for part in parts):
            problems.append(f"{name}: a name of other characters than letters, digits, '.', '_' and '-'")
    return problems


def write_record(ctx):
    path = ctx.results / f"{ctx.stem}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(ctx.plain(json.dumps(ctx.record, indent=2)) + "\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# The two steps that are this file's own: versions and data.

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
    for module in ("train_fastai", "predict", "bench"):  # ours: they import everything a run needs
        found[f"{module}.py"] = importable(module, problems) and "imports"
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
# Here, before the call: .carry/.

def prepare(shared, carry=CARRY):
    """Copy the wheels and the data into `carry`, once git is seen to ignore it and what travels to
    fit, and print the device call."""
    sources = [shared / "device" / name for name in WHEELS] + [shared / "data" / Path(DATA).name]
    missing = [str(p) for p in sources if not p.exists()]
    if missing:
        raise BadInput(f"{', '.join(missing)} not found: give --shared the folder that holds device/ and data/")
    # Asked of a file in it: git answers for a folder that does not exist yet only by a path inside it.
    if carry.absolute().is_relative_to(REPO) and subprocess.run(
            ["git", "check-ignore", "-q", str(carry / "commit.txt")], cwd=REPO).returncode != 0:
        raise BadInput(f"{carry} is not ignored by git: add {carry.name}/ to .gitignore, or it travels twice")
    tree = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                          text=True).stdout.split("\0")
    tree_mib = mib(REPO / p for p in tree if p)
    carry_mib = mib(p for source in sources for p in (source.rglob("*") if source.is_dir() else [source]))
    if tree_mib + carry_mib > TRAVEL_MIB:
        raise BadInput(f"the checkout ({tree_mib:.1f} MiB) and {carry.name}/ ({carry_mib:.1f} MiB) are over the "
                       f"{TRAVEL_MIB} MiB the device tool takes: remove untracked files from the checkout")
    carry.mkdir(exist_ok=True)
    # Copied as new, writable files (../shared's are read-only), which the next --prepare replaces:
    # a wheel left from an older copy would be installed too.
    for source in sources:
        if source.is_dir():
            shutil.rmtree(carry / source.name, ignore_errors=True)
            (carry / source.name).mkdir()
        for file in sorted(source.glob("*.whl")) if source.is_dir() else [source]:
            shutil.copyfile(file, carry / file.relative_to(source.parent))
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True)
    (carry / "commit.txt").write_text(commit.stdout)
    print(f"{carry.name}/ ready: {', '.join(p.name for p in sources)}, commit {commit.stdout.strip()}; "
          f"travels {tree_mib:.1f} MiB of checkout + {carry_mib:.1f} MiB of {carry.name}/ (at most {TRAVEL_MIB})\n"
          f"device call: {DEVICE_CALL}")


def mib(paths):
    """MiB of the regular files among `paths` (a link counts as the file it leads to)."""
    return sum(p.stat().st_size for p in paths if p.is_file()) / 2**20


# ---------------------------------------------------------------------------------------------
# The command.

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


def parse_args(argv=None):
    p = settings.OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="what comes back (default $OUT, which the device tool sets)")
    p.add_argument("--data", default=DATA, help=f"the CIFAR-10 .tgz or folder (default {DATA})")
    p.add_argument("--budget", type=float,
                   help=f"seconds for all the steps (default {BUDGET_S}, {SMOKE_SLACK} times that with --smoke); "
                        "a step that no longer fits is skipped")
    p.add_argument("--steps", help=f"comma-separated steps to run (default all: {','.join(STEP_NAMES)}); "
                                   "install always runs")
    p.add_argument("--scratch", type=Path, help="the scratch folder (default a new one in the temporary folder)")
    p.add_argument("--smoke", action="store_true", help="tiny, on the CPU, to test the driver: figures mean nothing")
    p.add_argument("--prepare", action="store_true",
                   help="on the development machine: copy the wheels and the data into .carry/ (its copies replaced)")
    p.add_argument("--shared", type=Path, default=REPO.parent / "shared",
                   help="with --prepare: the folder holding device/wheels-* and data/ (default ../shared)")
    p.add_argument("--versions", metavar="JSON", help="the versions step alone: write what the machine has to JSON")
    p.add_argument("--time-data", metavar="JSON", help="the data step alone: unpack and decode --data, times to JSON")
    p.add_argument("--debug", action="store_true", help="on an error, show the traceback too")
    args = p.parse_args(argv)
    if args.budget is None:
        args.budget = BUDGET_S * (SMOKE_SLACK if args.smoke else 1)
    if args.budget <= 0:
        p.error(f"--budget must be positive, not {args.budget:g}")
    args.steps = [s.strip() for s in args.steps.split(",") if s.strip()] if args.steps else None
    unknown = [s for s in args.steps or [] if s not in STEP_NAMES]
    if unknown:
        p.error(f"--steps: unknown step {', '.join(unknown)}; choose from {', '.join(STEP_NAMES)}")
    if args.steps == []:
        p.error(f"--steps names no step: give one or more of {', '.join(STEP_NAMES)}")
    args.out = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    if args.out is None and not (args.prepare or args.versions or args.time_data):
        p.error("no --out and no $OUT: run this through the device tool, which sets OUT, or give --out DIR")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        p.error(f"--out {args.out} is not a folder: give a folder (a missing one is created)")
    return args


def main(argv=None):
    args = parse_args(argv)
    with one_line_errors(args.debug):
        if args.prepare:
            return prepare(args.shared)
        if args.versions:
            sys.exit(versions(args.versions, args.smoke))
        if args.time_data:
            sys.exit(time_data(args.time_data, args.data))
        sys.exit(first_contact(args, argv))


def first_contact(args, argv, steps=STEPS, clock=time.monotonic):
    """Run the steps; exit status 0 when every step that ran finished, else 1."""
    args.out.mkdir(parents=True, exist_ok=True)
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="first-contact-"))
    scratch.mkdir(parents=True, exist_ok=True)
    home = writable_home(scratch)
    site = home / ".cache" / "cifar10-fast-site-py312"
    cache = Path(os.environ.get("CIFAR10_CACHE") or home / ".cache" / "cifar10-fast")
    started = datetime.now(timezone.utc)
    stem = f"first-contact-{device_label(args.smoke)}-{started:%Y-%m-%d}"
    placeholders = {scratch: "$SCRATCH", cache: "$CIFAR10_CACHE", site: "$SITE", args.out.absolute(): "$OUT",
                    REPO: ".", home: "~"}
    there_before = returned_files(args.out)
    results = args.out / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    log = Log(results / f"{stem}.log", placeholders, clock)
    ctx = Context(out=args.out, scratch=scratch, data=args.data, smoke=args.smoke, stem=stem, site=site,
                  env=step_environment(home, site, cache, args.data), plain=log.plain)
    commit = CARRY / "commit.txt"
    command = ["python3", "-m", "bench.first_contact", *(sys.argv[1:] if argv is None else argv)]
    ctx.record.update(command=log.plain(subprocess.list2cmdline(command)), smoke=args.smoke,
                      started=started.isoformat(timespec="seconds"), budget_s=args.budget, commit_at_prepare=commit.read_text().strip() if commit.is_file() else None)
    driver = Driver(ctx, steps, log, args.budget, clock)
    log(f"first contact: {ctx.record['command']}; budget {args.budget:.0f} s; steps "
        f"{', '.join(args.steps or [s.name for s in steps])}; scratch {scratch}; home {home}")
    if there_before:
        log(f"warning: {args.out} holds {len(there_before)} files already: they count against the "
            f"{RETURN_FILES} that come back")
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the device tool's stop: say so, then go
    try:
        statuses = driver.run(None if args.steps is None else {"install", *args.steps})
    except BaseException as e:
        log(f"driver stopped: {type(e).__name__} {e}")
        raise
    finally:
        if driver.current:
            stop(driver.current)
        signal.signal(signal.SIGTERM, previous)
        ctx.record["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        driver.save()
        problems = return_problems(args.out)
        ctx.record["returned"] = [{"file": name, "bytes": size} for name, size in returned_files(args.out)]
        ctx.record["return_problems"] = problems
        driver.save()
        for problem in problems:
            log(f"will not come back whole: {problem}")
        for line in summary_table(ctx.record):
            log(line)
        log.close()
    return 0 if all(s in ("ok", "skipped") for s in statuses.values()) else 1


def summary_table(record):
    lines = ["summary:", f"{'step':<13}{'status':<11}{'seconds':>8}{'budget':>8}  reason"]
    for step in record.get("steps", []):
        seconds = "" if step["seconds"] is None else f"{step['seconds']:.1f}"
        lines.append(f"{step['name']:<13}{step['status']:<11}{seconds:>8}{step['budget_s']:>8.0f}  "
                     f"{step['reason'] or ''}")
    returned = record.get("returned", [])
    lines.append(f"returned: {len(returned)} files, {sum(f['bytes'] for f in returned) / 2**20:.1f} MiB: "
                 + ", ".join(f["file"] for f in returned))
    return lines


if __name__ == "__main__":
    main()
