"""The recipe side by side with three other ways to train on CIFAR-10, in one process on one GPU.

Rows, all on the same data copy, one module each in this folder:
    ours          ours.py: train_fastai.py's own code path (`train_fastai.main`), --seeds runs
    seed-style    seed_style.py: plain PyTorch loop, torchvision-style Dataset over the same decoded
                  images, albumentations on CPU DataLoader workers, fp32, OneCycleLR, torch Adam
                  at its defaults with L2 weight decay (as the seed notebooks), same LRs
    fastai-stock  fastai_stock.py: fastai DataBlock reading the image files, per-item CPU transforms,
                  fp32, fit_one_cycle
    airbench94    airbench94.py: the PyPI package airbench 0.1.8 (another, smaller net), fed our copy
                  as cifar10/*.pt
measure.py holds what is measured beside the rows (driver, matmul ceiling, FLOPs, memory, profiler);
tensors.py the decoded images as tensors; this file the flags, the rows in order and the results file.

    python -m bench.bench                         # all rows; results in bench/results/<device>-<date>.json
    python -m bench.bench --rows ours --profile   # ours alone, and where its time goes
    python -m bench.bench --smoke --out DIR       # everything tiny on the CPU: tests the harness only

Results are rewritten after every run, so a run cut short keeps what it finished. BENCHMARKS.md
says what every field means.
"""
import argparse
import os
import sys
from pathlib import Path

from cifar10_fast.core import settings, startup
from cifar10_fast.core.config import option

REPO = Path(__file__).resolve().parents[1]

ROWS = ("ours", "seed-style", "fastai-stock", "airbench94")
# The full bench, and the smoke run that only checks the harness (never a figure to quote).
FULL = dict(epochs=24, bs=512, width=64, seeds=5, baseline_seeds=2, subset=None, workers=os.cpu_count(),
            matmul_size=8192, profile_steps=20)
SMOKE = dict(epochs=2, bs=16, width=8, seeds=2, baseline_seeds=1, subset=None, workers=0,
             matmul_size=256, profile_steps=3)
# The flags the bench shares with train_fastai.py: ours trains with them, the other rows with the same values.
TRAINING_FLAGS = ("data", "epochs", "bs", "width", "subset", "workers", "lr_min", "lr_max")
# Far more runs than a bench needs (each is a whole training), and a bound on the seed lists the
# results file holds: --seeds 100000000 built a list that took the machine's memory.
SEEDS_LIMIT = 100
NEEDS_GPU = f"the bench needs a CUDA GPU, and {settings.NO_GPU}: use --smoke --out DIR to check the harness on a CPU"


def parse_args(argv=None):
    """The bench's settings; every check that needs no torch is done here, before it loads."""
    p = settings.OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="CIFAR-10 folder or .tgz, as train_fastai.py takes it (default $CIFAR10_DATA)")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated rows (default all: {','.join(ROWS)})")
    p.add_argument("--seeds", type=int, help="runs of ours and of airbench94 (default 5)")
    p.add_argument("--baseline-seeds", type=int, help="runs of seed-style and fastai-stock (default 2; they are slow)")
    p.add_argument("--epochs", type=int, help="epochs of ours, seed-style and fastai-stock (default 24)")
    p.add_argument("--bs", type=int, help="batch size (default 512)")
    p.add_argument("--width", type=int, help="CustomResNet width (default 64, the recipe)")
    p.add_argument("--subset", type=int, help="train on the first N training images (default all)")
    p.add_argument("--workers", type=int, help="CPU DataLoader workers of the per-item rows (default all cores)")
    p.add_argument("--lr-min", type=float, help="LRMIN of seed-style and fastai-stock (default: ours' first finder)")
    p.add_argument("--lr-max", type=float, help="LRMAX of seed-style and fastai-stock (default: ours' first finder)")
    p.add_argument("--compile", action="store_true", help="ours with train_fastai.py --compile")
    p.add_argument("--profile", action="store_true",
                   help="also profile a few training steps of ours (torch.profiler); the table goes beside the results")
    p.add_argument("--out", type=Path, help="results folder (default bench/results; required with --smoke)")
    p.add_argument("--smoke", action="store_true",
                   help="everything tiny on the CPU, to test the harness; its figures mean nothing")
    p.add_argument("--debug", action="store_true", help="on an error, show the traceback too")
    args = p.parse_args(argv)
    for name, value in (SMOKE if args.smoke else FULL).items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    args.rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in args.rows if r not in ROWS]
    if not args.rows:  # else it ran nothing and wrote an empty results file
        p.error(f"--rows names no row: give one or more of {', '.join(ROWS)}")
    if unknown:
        p.error(f"--rows: unknown row {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    repeated = next((row for i, row in enumerate(args.rows) if row in args.rows[:i]), None)
    if repeated:  # else it trained the row twice over
        p.error(f"--rows names {repeated} twice: give each row once (--seeds and --baseline-seeds set its runs)")
    if args.smoke and args.out is None:
        p.error("--smoke needs --out DIR: smoke results are never written into bench/results")
    for name in ("seeds", "baseline_seeds"):
        if not 1 <= getattr(args, name) <= SEEDS_LIMIT:
            p.error(f"{option(name)} must be from 1 to {SEEDS_LIMIT}, not {getattr(args, name)}")
    settings.check_training_flags(args, TRAINING_FLAGS)
    if not (args.data or os.environ.get("CIFAR10_DATA")):  # else found out once torch has loaded, after the device
        p.error("the bench times a local copy of CIFAR-10: give --data or set CIFAR10_DATA (a folder or .tgz)")
    args.out = args.out or REPO / "bench" / "results"
    settings.check_out_folder(p, args.out)
    if not args.smoke and settings.no_cuda_here():  # the flags first: a GPU machine would refuse them too
        p.error(NEEDS_GPU)
    return args


startup.flags_first(__name__, parse_args)  # --help and bad flags answer before torch and fastai load (seconds)

# The rest loads in seconds: it comes after the flags are checked.
import json
import platform
import re
import shlex
import tempfile
import warnings
from contextlib import redirect_stderr, redirect_stdout
from datetime import datetime, timezone

warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated")  # raised inside fastai's import
import numpy as np
import torch

from bench import (
    airbench94,
    fastai_stock,
    ours,
    seed_style,
)
from bench.measure import driver_version, flops_per_image, matmul_peak_tflops
from bench.tensors import data_tensors
from cifar10_fast.core.errors import BadInput, one_line_errors
from cifar10_fast.core.files import unused_names, write_json
from cifar10_fast.data.cache import cache_root
from cifar10_fast.data.sources import cifar10_folder
from cifar10_fast.training.hardware import device_name, library_versions

RUNNERS = dict(zip(ROWS, (ours.run, seed_style.run, fastai_stock.run, airbench94.run)))


def bench_device(smoke):
    if smoke:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise BadInput(NEEDS_GPU)
    return torch.device("cuda")


# ---------------------------------------------------------------------------------------------
# The results file.

def summarize(name, runs, reason=None):
    row = {"row": name, "status": "skipped" if reason else "ok", "reason": reason, "runs": runs}
    if not runs:
        return row
    for key in ("accuracy", "fit_s", "total_s", "images_per_s", "peak_gpu_mib", "mfu"):
        values = [r[key] for r in runs if r.get(key) is not None]
        if values:
            row[f"{key}_mean"] = float(np.mean(values))
            row[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return row


def add_ratios(rows):
    """Each row's means over ours' means: above 1 for fit_s means slower than ours."""
    ours_row = next((r for r in rows if r["row"] == "ours" and r["status"] == "ok"), None)
    for row in rows:
        row["ratio_to_ours"] = {key: row[f"{key}_mean"] / ours_row[f"{key}_mean"]
                                for key in ("accuracy", "fit_s", "total_s", "images_per_s")
                                if ours_row and f"{key}_mean" in row and ours_row.get(f"{key}_mean")}


def results_stem(out, device_label):
    """bench/results/<device>-<date>, or the first of -2, -3, ... that names no .json or .log yet."""
    stem = f"{re.sub(r'[^a-z0-9]+', '-', device_label.lower()).strip('-')}-{datetime.now(timezone.utc):%Y-%m-%d}"
    for candidate in unused_names(stem):
        if not (out / f"{candidate}.json").exists() and not (out / f"{candidate}.log").exists():
            return out / candidate
    raise BadInput(f"too many results files named {stem} in {out}: move some away")


def finish(results, save, stem, report=None):
    """The results stamped finished and written whole, the bench's `report` of them printed, and
    where they lie."""
    results["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    save()
    if report:
        report(results)
    print(f"results: {stem.with_suffix('.json')}")


class Tee:
    """Write to the terminal and to the raw log at once. Folders named in `placeholders` are
    written as their placeholder (a deleted scratch folder, the data cache): the log is committed,
    and a path of the machine that ran it means nothing to a reader."""

    def __init__(self, *streams, placeholders=None):
        self.streams, self.placeholders = streams, placeholders or {}

    def write(self, text):
        for folder, placeholder in self.placeholders.items():
            text = text.replace(str(folder), placeholder)
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self):
        for s in self.streams:
            s.flush()


# ---------------------------------------------------------------------------------------------
# The rows, in order.

def row_seeds(args, name):
    return list(range(args.seeds if name in ("ours", "airbench94") else args.baseline_seeds))


def skip_reason(args, name, device, work, data):
    """Why a row cannot run here, or None; prepares what it needs on the way."""
    if name in ("seed-style", "fastai-stock") and not args.lrs:
        return "no LRs: run ours in the same bench, or give --lr-min and --lr-max"
    if name == "airbench94":
        return airbench94.unavailable(device, work, data)
    return None


def run_bench(args, device, work, results, save):
    data = data_tensors(args.folder, args.subset)
    args.train_images = len(data["train"][1])
    for name in args.rows:
        runs = []
        reason = skip_reason(args, name, device, work, data)
        results["rows"].append(summarize(name, runs, reason))
        for seed in [] if reason else row_seeds(args, name):
            runs.append(RUNNERS[name](args, device, seed, work))
            # Process-wide, and set by whoever ran last (ours: fastai's set_seed; airbench: its import).
            runs[-1]["cudnn"] = {"benchmark": torch.backends.cudnn.benchmark,
                                 "deterministic": torch.backends.cudnn.deterministic}
            print(f"{name}, seed {seed}: {json.dumps(runs[-1])}")
            if name == "ours" and not args.lrs:
                args.lrs = (runs[0]["lr_min"], runs[0]["lr_max"])
            results["rows"][-1] = summarize(name, runs)
            add_ratios(results["rows"])
            save()
        if reason:
            print(f"{name}: skipped: {reason}")
            save()
    if args.profile:
        profile_path = args.stem.with_name(args.stem.name + "-profile.txt")
        ours.profile(args, device, args.lrs or (1e-4, 1e-3), profile_path)


def main(argv=None):
    args = parse_args(argv)
    with one_line_errors(args.debug):  # bad input, the machine's included: one line, exit status 2
        bench_and_record(args, argv)


def bench_and_record(args, argv):
    """Every row in order, the results file rewritten after each run, and the raw log beside it."""
    device = bench_device(args.smoke)
    args.folder = cifar10_folder(args.data)
    args.lrs = (args.lr_min, args.lr_max) if args.lr_min and args.lr_max else None
    label = device_name(device) if device.type == "cuda" else "cpu-smoke"
    args.out.mkdir(parents=True, exist_ok=True)
    args.stem = results_stem(args.out, label)
    args.peak_tflops = matmul_peak_tflops(device, args.matmul_size)
    args.train_flops, args.eval_flops = flops_per_image(args.width, True), flops_per_image(args.width, False)
    results = {
        "command": shlex.join(["python", "-m", "bench.bench", *(sys.argv[1:] if argv is None else argv)]),
        "smoke": args.smoke, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(device), "driver": driver_version(), "host": platform.node(),
        # the data as given, not the cache it unpacks to
        "versions": library_versions(), "data": args.data or os.environ.get("CIFAR10_DATA"),
        "settings": {k: args.__dict__[k] for k in ("rows", "epochs", "bs", "width", "subset", "workers", "seeds",
                                                   "baseline_seeds", "compile")},
        "seeds": {name: row_seeds(args, name) for name in args.rows},
        "bf16_matmul_tflops": args.peak_tflops, "matmul_size": args.matmul_size,
        "model_flops_per_image": {"train": args.train_flops, "eval": args.eval_flops},
        "rows": [],
    }

    def save():
        write_json(args.stem.with_suffix(".json"), results)

    # The raw log is committed: it names the scratch folder, the data cache and the checkout, not where they lie here.
    with tempfile.TemporaryDirectory(prefix="bench-") as work, open(args.stem.with_suffix(".log"), "w") as log:
        placeholders = {work: "$SCRATCH", cache_root(): "$CIFAR10_CACHE", REPO: "."}
        with redirect_stdout(Tee(sys.stdout, log, placeholders=placeholders)), \
                redirect_stderr(Tee(sys.stderr, log, placeholders=placeholders)):
            print(f"bench: {results['command']}\ndevice: {results['device']}, driver {results['driver']}, "
                  f"bf16 matmul {args.peak_tflops:.1f} TFLOP/s measured")
            save()
            run_bench(args, device, Path(work), results, save)
            finish(results, save, args.stem)


if __name__ == "__main__":
    startup.run(main)
