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
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.first_contact_driver import (
    RETURN_FILES,
    SMOKE_SLACK,
    Context,
    Driver,
    Log,
    Step,
    StepError,
    bring_back,
    return_problems,
    returned_files,
    stop,
    summary_table,
)
from bench.first_contact_machine import device_label, step_environment, time_data, versions, writable_home
from cifar10_fast.core import (
    settings,  # the standard library only
    startup,
)
from cifar10_fast.core.errors import BadInput, one_line_errors

REPO = Path(__file__).resolve().parents[1]

BUDGET_S = 450  # the driver's own: the device call's timeout_s is 480, and a rerun must still fit in 15 minutes
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
        return [ctx.python, "-m", "bench.bench", *flags, "--data", ctx.data, "--out", str(ctx.scratch / folder),
                "--debug"]
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
    if not 0 < args.budget < float("inf"):  # nan compares false both ways: it would run every step unbounded
        p.error(f"--budget must be a positive number of seconds, not {args.budget:g}")
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
                      started=started.isoformat(timespec="seconds"), budget_s=args.budget,
                      commit_at_prepare=commit.read_text().strip() if commit.is_file() else None)
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


if __name__ == "__main__":
    startup.run(main)
