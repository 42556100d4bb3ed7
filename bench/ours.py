"""ours: train_fastai.py itself, called as train_fastai.main([...]) with the recipe's flags, and a
profile of its training steps."""
import json
import shlex
import tempfile
import time
from pathlib import Path

import torch

import train_fastai
from augment import training_augmentations
from bench.measure import ProfileSteps, peak_memory, synchronize
from cifar10_fast.core import settings
from cifar10_fast.data.loaders import cifar10_dataloaders
from cifar10_fast.training.hardware import resolve_precision
from cifar10_fast.training.lr_schedule import one_cycle


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


def run(args, device, seed, work):
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


def profile(args, device, lrs, path):
    """Profile ours' training steps: the top kernels and operators by device time (CPU time on a CPU)."""
    targs = settings.parse_args(train_fastai_argv(args, device, 0, path.parent, lrs))
    dls, _ = cifar10_dataloaders(args.folder, bs=args.bs, device=device, subset=args.subset, seed=0,
                                 augmentations=training_augmentations("gpu"))
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
