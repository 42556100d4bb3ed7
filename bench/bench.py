"""The recipe side by side with three other ways to train on CIFAR-10, in one process on one GPU.

Rows, all on the same data copy:
    ours          train_fastai.py's own code path (`train_fastai.main`), --seeds runs
    seed-style    plain PyTorch loop, torchvision-style Dataset over the same decoded images,
                  albumentations on CPU DataLoader workers, fp32, OneCycleLR, Adam, same LRs
    fastai-stock  fastai DataBlock reading the image files, per-item CPU transforms, fp32, fit_one_cycle
    airbench94    the PyPI package airbench 0.1.8 (another, smaller net), fed our copy as cifar10/*.pt

    python bench/bench.py                         # all rows; results in bench/results/<device>-<date>.json
    python bench/bench.py --rows ours --profile   # ours alone, and where its time goes
    python bench/bench.py --smoke --out DIR       # everything tiny on the CPU: tests the harness only

Results are rewritten after every run, so a run cut short keeps what it finished. BENCHMARKS.md
says what every field means.
"""
import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, redirect_stdout, redirect_stderr
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from fastai.vision.all import CancelFitException, Callback, CrossEntropyLossFlat, Adam, Learner, accuracy, set_seed  # noqa: E402,E501
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import checkpoint  # noqa: E402
import settings  # noqa: E402
import train_fastai  # noqa: E402
from augment import albumentations_pipeline  # noqa: E402
from customresnet import CustomResNet  # noqa: E402
from files import unused_names, write_json  # noqa: E402
from hardware import device_name, library_versions, resolve_precision  # noqa: E402
from lr_schedule import one_cycle  # noqa: E402
from data import (channel_stats, cifar10_dataloaders, cifar10_folder, cifar10_items, class_names,  # noqa: E402
                  decoded_images, in_test_folder)

ROWS = ("ours", "seed-style", "fastai-stock", "airbench94")
# The full bench, and the smoke run that only checks the harness (never a figure to quote).
FULL = dict(epochs=24, bs=512, width=64, seeds=5, baseline_seeds=2, subset=None, workers=os.cpu_count(),
            matmul_size=8192, profile_steps=20)
SMOKE = dict(epochs=2, bs=16, width=8, seeds=2, baseline_seeds=1, subset=None, workers=0,
             matmul_size=256, profile_steps=3)
WEIGHT_DECAY = settings.RECIPE["wd"]  # the recipe's, as train_fastai.py runs it
AIRBENCH_UNAVAILABLE_ON_CPU = ("airbench 0.1.8 trains on CUDA only (make_net94 calls .cuda(), train() times "
                               "with torch.cuda.Event)")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    args = p.parse_args(argv)
    for name, value in (SMOKE if args.smoke else FULL).items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    args.rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in args.rows if r not in ROWS]
    if unknown:
        p.error(f"--rows: unknown row {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    if args.smoke and args.out is None:
        p.error("--smoke needs --out DIR: smoke results are never written into bench/results")
    for name in ("seeds", "baseline_seeds", "epochs", "bs", "width"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, not {getattr(args, name)}")
    args.out = args.out or REPO / "bench" / "results"
    return args


# ---------------------------------------------------------------------------------------------
# The machine.

def bench_device(smoke):
    if smoke:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        sys.exit("error: the bench needs a CUDA GPU; use --smoke --out DIR to check the harness on a CPU")
    return torch.device("cuda")


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


# ---------------------------------------------------------------------------------------------
# The data, once, for the rows that take tensors.

def data_tensors(folder, subset):
    """uint8 (N, 3, 32, 32) images and int64 labels of the train and test splits, the pixels
    ours decodes (data.py's cache), in ours' image order."""
    classes = class_names(folder)
    items = cifar10_items(folder, subset)
    images, readable = decoded_images(folder, items)  # unreadable training images are skipped, as ours does
    items, images = [p for p, ok in zip(items, readable) if ok], images[torch.from_numpy(readable)]
    labels = torch.tensor([classes.index(p.parent.name) for p in items])
    test = torch.tensor([in_test_folder(p) for p in items])
    return {"train": (images[~test], labels[~test]), "test": (images[test], labels[test]), "classes": classes}


# ---------------------------------------------------------------------------------------------
# ours: train_fastai.py itself.

def train_fastai_argv(args, device, seed, out, lrs=None):
    argv = ["--data", str(args.folder), "--out", str(out), "--seed", str(seed), "--epochs", str(args.epochs),
            "--bs", str(args.bs), "--width", str(args.width), "--device", device.type]
    if args.subset:
        argv += ["--subset", str(args.subset)]
    if args.compile:
        argv.append("--compile")
    if lrs:
        argv += ["--lr-min", str(lrs[0]), "--lr-max", str(lrs[1])]
    return argv


def run_ours(args, device, seed, work):
    out = Path(tempfile.mkdtemp(dir=work, prefix="ours-"))
    argv = train_fastai_argv(args, device, seed, out)
    print(f"ours, seed {seed}: python train_fastai.py {shlex.join(argv)}")
    result = {"seed": seed}
    with peak_memory(device, result):
        start = time.perf_counter()
        train_fastai.main(argv)
        synchronize(device)
        result["total_s"] = time.perf_counter() - start
    run_dir, = [p for p in out.iterdir() if p.is_dir()]
    summary = json.loads((run_dir / "summary.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    images = args.epochs * (config["train_images"] // args.bs) * args.bs  # fastai drops the last partial batch
    flops = images * args.train_flops + args.epochs * config["test_images"] * args.eval_flops
    result.update(accuracy=summary["final_accuracy"], fit_s=summary["fit_seconds"],
                  images_per_s=images / summary["fit_seconds"], lr_min=config["lr_min"], lr_max=config["lr_max"],
                  model_tflop=flops / 1e12, mfu=flops / summary["fit_seconds"] / (args.peak_tflops * 1e12))
    return result


# ---------------------------------------------------------------------------------------------
# seed-style: the seed notebooks' plain PyTorch loop.

class AugmentedImages(torch.utils.data.Dataset):
    """torchvision-style: uint8 HWC images in memory, albumentations per image, a normalised tensor out."""

    def __init__(self, images, labels, mean, std, pipeline=None):
        self.images, self.labels, self.pipeline = images.permute(0, 2, 3, 1).numpy(), labels, pipeline
        self.mean, self.std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        image = self.images[i]
        if self.pipeline:
            image = self.pipeline(image=image)["image"]
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255
        return (x - self.mean) / self.std, self.labels[i]


def reseed_worker(_):
    # Each worker holds a copy of the pipeline with the same random state: give each its own.
    dataset = torch.utils.data.get_worker_info().dataset
    dataset.pipeline.set_random_seed(torch.initial_seed() % 2**32)


def decoupled_adam(model, lr, wd):
    """Adam with decoupled weight decay, none on BatchNorm and biases: the optimiser ours gets from fastai."""
    decayed = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.Adam([{"params": decayed, "weight_decay": wd}, {"params": rest, "weight_decay": 0}],
                            lr=lr, betas=(0.95, 0.99), eps=1e-5, decoupled_weight_decay=True)


def test_accuracy(model, loader, device):
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x.to(device)).argmax(1) == y.to(device)).sum()
    return correct.item() / len(loader.dataset)


def run_seed_style(args, device, seed, work):
    result = {"seed": seed}
    with peak_memory(device, result):
        start = time.perf_counter()
        set_seed(seed)
        data = data_tensors(args.folder, args.subset)
        mean, std = channel_stats(data["train"][0])
        loader = dict(batch_size=args.bs, num_workers=args.workers, pin_memory=device.type == "cuda",
                      persistent_workers=args.workers > 0)
        train_dl = torch.utils.data.DataLoader(
            AugmentedImages(*data["train"], mean, std, albumentations_pipeline(mean, seed)), shuffle=True,
            drop_last=True, worker_init_fn=reseed_worker, **loader)
        test_dl = torch.utils.data.DataLoader(AugmentedImages(*data["test"], mean, std), **loader)
        model = CustomResNet(len(data["classes"]), args.width).to(device)
        lr_min, lr_max = args.lrs
        opt = decoupled_adam(model, lr_max, WEIGHT_DECAY)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr_max, total_steps=args.epochs * len(train_dl), pct_start=settings.PEAK_FRACTION,
            div_factor=lr_max / lr_min, final_div_factor=1.0, base_momentum=0.85, max_momentum=0.95)
        fit_start = time.perf_counter()
        for _ in range(args.epochs):
            model.train()
            for x, y in train_dl:
                loss = F.cross_entropy(model(x.to(device, non_blocking=True)), y.to(device, non_blocking=True))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            accuracy_now = test_accuracy(model, test_dl, device)  # every epoch, as fastai does
        synchronize(device)
        result["fit_s"] = time.perf_counter() - fit_start
        result["total_s"] = time.perf_counter() - start
    result.update(accuracy=accuracy_now, images_per_s=args.epochs * len(train_dl) * args.bs / result["fit_s"])
    return result


# ---------------------------------------------------------------------------------------------
# fastai-stock: fastai's per-item path, none of ours' GPU work.

def run_fastai_stock(args, device, seed, work):
    result = {"seed": seed}
    with peak_memory(device, result):
        start = time.perf_counter()
        set_seed(seed)
        dls, _ = cifar10_dataloaders(args.folder, bs=args.bs, aug="albumentations", device=device,
                                     subset=args.subset, workers=args.workers, seed=seed)
        learn = Learner(dls, CustomResNet(len(dls.vocab), args.width), loss_func=CrossEntropyLossFlat(),
                        opt_func=Adam, metrics=accuracy, wd=WEIGHT_DECAY,
                        path=Path(tempfile.mkdtemp(dir=work, prefix="fastai-stock-")))
        schedule = one_cycle(*args.lrs, args.epochs * settings.PEAK_FRACTION, args.epochs)
        result["fit_s"] = checkpoint.fit(learn, schedule, learn.path, resumed={})
        result["total_s"] = time.perf_counter() - start
    result.update(accuracy=float(learn.recorder.values[-1][2]),
                  images_per_s=args.epochs * len(dls.train) * args.bs / result["fit_s"])
    return result


# ---------------------------------------------------------------------------------------------
# airbench94: the speed record's reference trainer, on our copy.

def write_airbench_data(data, work):
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
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def airbench_check(work, device):
    """Load our files through airbench's own loader: the format is airbench's, not our guess of it."""
    import airbench
    with working_directory(work):
        for train in (True, False):
            loader = airbench.CifarLoader("cifar10", train=train, gpu=device if device.type == "cuda" else "cpu")
            assert loader.images.shape[1:] == (3, 32, 32) and len(loader.labels) == len(loader.images)
    return airbench


def run_airbench(args, device, seed, work):
    airbench = args.airbench
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


# ---------------------------------------------------------------------------------------------
# Rows, summaries, the results file.

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
    ours = next((r for r in rows if r["row"] == "ours" and r["status"] == "ok"), None)
    for row in rows:
        row["ratio_to_ours"] = {key: row[f"{key}_mean"] / ours[f"{key}_mean"]
                                for key in ("accuracy", "fit_s", "total_s", "images_per_s")
                                if ours and f"{key}_mean" in row and ours.get(f"{key}_mean")}


def results_stem(out, device_label):
    """bench/results/<device>-<date>, or the first of -2, -3, ... that names no .json or .log yet."""
    stem = f"{re.sub(r'[^a-z0-9]+', '-', device_label.lower()).strip('-')}-{datetime.now(timezone.utc):%Y-%m-%d}"
    for candidate in unused_names(stem):
        if not (out / f"{candidate}.json").exists() and not (out / f"{candidate}.log").exists():
            return out / candidate
    raise SystemExit(f"error: too many results files named {stem} in {out}: move some away")


class Tee:
    """Write to the terminal and to the raw log at once."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self):
        for s in self.streams:
            s.flush()


# ---------------------------------------------------------------------------------------------
# Where the time goes.

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


def profile_ours(args, device, lrs, path):
    """Profile ours' training steps: the top kernels and operators by device time (CPU time on a CPU)."""
    targs = settings.parse_args(train_fastai_argv(args, device, 0, path.parent, lrs))
    dls, _ = cifar10_dataloaders(args.folder, bs=args.bs, device=device, subset=args.subset, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        learn = train_fastai.make_learner(dls, targs, Path(tmp), resolve_precision("auto", device))
        warmup = max(1, args.profile_steps // 4)
        activities = [torch.profiler.ProfilerActivity.CPU] + (
            [torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
        sort = "device_time_total" if device.type == "cuda" else "cpu_time_total"
        profiler = torch.profiler.profile(activities=activities)
        steps = ProfileSteps(profiler, warmup, args.profile_steps)
        with learn.no_logging():
            learn.fit_one_cycle(**one_cycle(*lrs, 1, 1), cbs=steps)
    table = profiler.key_averages().table(sort_by=sort, row_limit=40)
    path.write_text(f"torch.profiler over {args.profile_steps} training steps of ours (after {warmup} warm-up "
                    f"steps), bs {args.bs}, width {args.width}, compile {args.compile}: {steps.ms_per_step:.2f} ms "
                    f"a step by the wall clock (profiler on); sorted by {sort}\n\n{table}\n")
    print(f"profile of {args.profile_steps} steps written to {path}")


# ---------------------------------------------------------------------------------------------

RUNNERS = {"ours": run_ours, "seed-style": run_seed_style, "fastai-stock": run_fastai_stock,
           "airbench94": run_airbench}


def row_seeds(args, name):
    return list(range(args.seeds if name in ("ours", "airbench94") else args.baseline_seeds))


def skip_reason(args, name, device, work, data):
    """Why a row cannot run here, or None; prepares what it needs on the way."""
    if name in ("seed-style", "fastai-stock") and not args.lrs:
        return "no LRs: run ours in the same bench, or give --lr-min and --lr-max"
    if name == "airbench94":
        write_airbench_data(data, work)
        try:
            args.airbench = airbench_check(work, device)
        except ImportError:
            return "airbench is not installed: pip install airbench==0.1.8"
        if device.type != "cuda":
            return AIRBENCH_UNAVAILABLE_ON_CPU
        with working_directory(work):
            args.airbench.warmup94()  # one step, as its README does before timing: CUDA and cuDNN set-up
    return None


def run_bench(args, device, results, save):
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
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
            profile_ours(args, device, args.lrs or (1e-4, 1e-3), args.stem.with_name(args.stem.name + "-profile.txt"))


def main(argv=None):
    args = parse_args(argv)
    device = bench_device(args.smoke)
    args.folder = cifar10_folder(args.data)
    args.lrs = (args.lr_min, args.lr_max) if args.lr_min and args.lr_max else None
    label = device_name(device) if device.type == "cuda" else "cpu-smoke"
    args.out.mkdir(parents=True, exist_ok=True)
    args.stem = results_stem(args.out, label)
    args.peak_tflops = matmul_peak_tflops(device, args.matmul_size)
    args.train_flops, args.eval_flops = flops_per_image(args.width, True), flops_per_image(args.width, False)
    results = {
        "command": shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(["bench/bench.py", *argv]),
        "smoke": args.smoke, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(device), "driver": driver_version(), "host": platform.node(),
        "versions": library_versions(), "data": str(args.folder),
        "settings": {k: args.__dict__[k] for k in ("rows", "epochs", "bs", "width", "subset", "workers", "seeds",
                                                   "baseline_seeds", "compile")},
        "seeds": {name: row_seeds(args, name) for name in args.rows},
        "bf16_matmul_tflops": args.peak_tflops, "matmul_size": args.matmul_size,
        "model_flops_per_image": {"train": args.train_flops, "eval": args.eval_flops},
        "rows": [],
    }

    def save():
        write_json(args.stem.with_suffix(".json"), results)

    with open(args.stem.with_suffix(".log"), "w") as log, \
            redirect_stdout(Tee(sys.stdout, log)), redirect_stderr(Tee(sys.stderr, log)):
        print(f"bench: {results['command']}\ndevice: {results['device']}, driver {results['driver']}, "
              f"bf16 matmul {args.peak_tflops:.1f} TFLOP/s measured")
        save()
        run_bench(args, device, results, save)
        results["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        save()
        print(f"results: {args.stem.with_suffix('.json')}")


if __name__ == "__main__":
    main()
