"""How fast each refusal answers, as a user runs it: every command in a fresh process, beside
Python's own start (`python -c pass`) and torch's import (`python -c "import torch"`), which no
refusal or --help should wait for.

    python -m bench.refusals                      # results: bench/results/refusals-<cpu>-<date>.json and .log
    python -m bench.refusals --smoke --out DIR    # each command timed once: tests the harness

First each command runs once under `python -X importtime`: its exit status, its stderr (a refusal:
one `error:` line) and whether it imported torch are recorded. Then the commands and the two
baselines run --repeats times each, in turns, so that a change in the machine's load falls on all
of them; the results hold every time, the median and the minimum. A command that imports torch,
or answers otherwise than expected, is named at the end, and the bench exits with status 1. The
commands run from the checkout without CIFAR10_DATA, which would otherwise be checked first.
"""
import argparse
import os
import sys
from pathlib import Path

from cifar10_fast.core import settings, startup

# Each command as a user types it, after `python`; {scratch} is a folder the bench makes, with a
# run folder whose config.json was cut short in {scratch}/run. A --help answers with status 0,
# every other command is a refusal (status 2).
COMMANDS = [
    ("train_fastai.py", "--help"),
    ("train_fastai.py", "--device", "mps"),
    ("train_fastai.py", "--data", "{scratch}/nope"),
    ("train_fastai.py", "--device", "cpu", "--precision", "bf16"),
    ("train_fastai.py", "--epochs", "0"),
    ("train_fastai.py", "--finder-iters", "12"),
    ("train_fastai.py", "--wd", "1e308", "--lr-max", "1e-3"),
    ("train_fastai.py", "--sweep", "lr_max=1e-2,1e-2"),
    ("train_fastai.py", "--find-lr", "--tta"),
    ("-m", "bench.bench", "--help"),
    ("-m", "bench.bench", "--rows", "ours,ours"),
    ("-m", "bench.overhead", "--help"),
    ("-m", "bench.overhead", "--profile-warmup", "-1"),
    ("-m", "bench.reference", "--help"),
    ("-m", "bench.reference", "{scratch}/run"),
    ("predict.py", "--help"),
    ("predict.py", "--topk", "0", "x.png"),
    ("predict.py", "--run", "{scratch}/nope", "x.png"),
    ("compare.py", "--help"),
    ("compare.py", "--bogus"),
]
BASELINES = {"python -c pass": ("-c", "pass"), "python -c 'import torch'": ("-c", "import torch")}
REPEATS, SMOKE_REPEATS, REPEATS_LIMIT = 5, 1, 100


def parse_args(argv=None):
    p = settings.OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, help=f"timed runs of each command (default {REPEATS}; "
                                               f"{SMOKE_REPEATS} with --smoke)")
    p.add_argument("--smoke", action="store_true", help="each command timed once, to test the harness; its "
                                                        "figures mean nothing")
    p.add_argument("--out", type=Path, help="results folder (default bench/results; required with --smoke)")
    args = p.parse_args(argv)
    if args.smoke and args.out is None:
        p.error("--smoke needs --out DIR: smoke results are never written into bench/results")
    if args.repeats is None:
        args.repeats = SMOKE_REPEATS if args.smoke else REPEATS
    if not 1 <= args.repeats <= REPEATS_LIMIT:
        p.error(f"--repeats must be from 1 to {REPEATS_LIMIT}, not {args.repeats}")
    args.out = args.out or REPO / "bench" / "results"
    settings.check_out_folder(p, args.out)
    return args


startup.flags_first(__name__, parse_args)

import json
import platform
import shlex
import statistics
import subprocess
import tempfile
import time

REPO = Path(__file__).resolve().parents[1]
from contextlib import redirect_stdout
from datetime import datetime, timezone
from importlib import metadata

from bench.bench import Tee, results_stem
from bench.measure import cpu_name
from cifar10_fast.core.files import write_json
from cifar10_fast.training.outputs import git_commit

# A user's CIFAR10_DATA would be checked before most of the flags: the commands run without it.
ENVIRONMENT = {name: value for name, value in os.environ.items() if name != "CIFAR10_DATA"}


def expected_status(command):
    return 0 if "--help" in command else 2


def command_line(command, scratch):
    """The command line of `command`, its {scratch} filled in."""
    return [sys.executable, *(part.format(scratch=scratch) for part in command)]


def as_typed(command):
    """`command` as the results name it: as typed, the scratch folder written as $SCRATCH."""
    return " ".join(["python", *(part.format(scratch="$SCRATCH") for part in command)])


def make_scratch(scratch):
    """What the commands name: a run folder whose config.json was cut short (the others whole)."""
    run = scratch / "run"
    run.mkdir()
    for name in ("summary.json", "classes.json"):
        (run / name).write_text("{}")
    (run / "model.safetensors").write_bytes(b"")
    (run / "config.json").write_text('{"epochs": 24, "bs": 5')


def probe(command, scratch):
    """How `command` answers: exit status, stderr lines (less the import times) and whether it
    imported torch; `ok` if it answered as expected without torch."""
    done = subprocess.run([sys.executable, "-X", "importtime", *command_line(command, scratch)[1:]], cwd=REPO,
                          env=ENVIRONMENT, capture_output=True, text=True, timeout=300)
    lines = done.stderr.replace(str(scratch), "$SCRATCH").replace(str(REPO), ".").splitlines()
    modules = [line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")]
    stderr = [line for line in lines if not line.startswith("import time:")]
    imports_torch = any(module == "torch" or module.startswith("torch.") for module in modules)
    status = expected_status(command)
    answer = (stderr == [] and done.stdout.startswith("usage:")) if status == 0 else (
        len(stderr) == 1 and stderr[0].startswith("error: "))
    return {"command": as_typed(command), "expected_status": status, "status": done.returncode,
            "stderr": stderr, "imports_torch": imports_torch,
            "ok": done.returncode == status and answer and not imports_torch}


def seconds(command_line):
    start = time.perf_counter()
    subprocess.run(command_line, cwd=REPO, env=ENVIRONMENT, capture_output=True, timeout=300)
    return time.perf_counter() - start


def timings(times):
    return {"seconds": times, "median": statistics.median(times), "min": min(times)}


def measure(args, scratch, results, save):
    lines = {**{name: [sys.executable, *flags] for name, flags in BASELINES.items()},
             **{as_typed(command): command_line(command, scratch) for command in COMMANDS}}
    times = {name: [] for name in lines}
    for repeat in range(args.repeats):
        for name, line in lines.items():
            times[name].append(seconds(line))
        print(f"repeat {repeat + 1} of {args.repeats}: {json.dumps({n: round(t[-1], 3) for n, t in times.items()})}")
    results["baselines"] = {name: timings(times[name]) for name in BASELINES}
    for refusal in results["refusals"]:
        refusal.update(timings(times[refusal["command"]]))
    save()


def report(results):
    print(f"\nseconds, median of {results['repeats']} (min):")
    for name, timed in [*results["baselines"].items(), *((r["command"], r) for r in results["refusals"])]:
        print(f"{timed['median']:8.3f} ({timed['min']:.3f})  {name}")
    failed = [r["command"] for r in results["refusals"] if not r["ok"]]
    for command in failed:
        print(f"not as expected (status, stderr or torch imported): {command}")
    return failed


def main(argv=None):
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = results_stem(args.out, "refusals smoke" if args.smoke else f"refusals {cpu_name()}")
    results = {
        "command": shlex.join(["python", "-m", "bench.refusals", *(sys.argv[1:] if argv is None else argv)]),
        "smoke": args.smoke, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": cpu_name(), "cores": os.cpu_count(), "load_average_before": os.getloadavg(),
        "versions": {"python": platform.python_version(),
                     **{name: metadata.version(name) for name in ("torch", "fastai", "numpy", "pandas", "matplotlib")}},
        "git_commit": git_commit(), "repeats": args.repeats, "baselines": {}, "refusals": [],
    }

    def save():
        write_json(stem.with_suffix(".json"), results)

    with tempfile.TemporaryDirectory(prefix="refusals-") as tmp, open(stem.with_suffix(".log"), "w") as log, \
            redirect_stdout(Tee(sys.stdout, log, placeholders={tmp: "$SCRATCH", REPO: "."})):
        scratch = Path(tmp)
        make_scratch(scratch)
        print(f"refusals bench: {results['command']}\ndevice: {results['device']}, {results['cores']} cores, "
              f"load average {results['load_average_before'][0]:.2f}")
        for command in COMMANDS:
            results["refusals"].append(probe(command, scratch))
            print(json.dumps(results["refusals"][-1]))
        save()
        measure(args, scratch, results, save)
        results.update(load_average_after=os.getloadavg(), finished=datetime.now(timezone.utc).isoformat(
            timespec="seconds"), all_ok=all(r["ok"] for r in results["refusals"]))
        save()
        failed = report(results)
        print(f"results: {stem.with_suffix('.json')}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    startup.run(main)
