"""Train the DAWNBench CustomResNet on CIFAR-10 with fastai, from LR range test to exported learner.

The recipe (Myrtle's "How to train your ResNet", as DAWNBench ran it):
    model               CustomResNet, the 9-layer ResNet (customresnet.py)
    LR range test       fastai's lr_find; LRMIN and LRMAX both read off its curve (lr_schedule.LR_RULE)
    one-cycle           24 epochs, LRMIN -> LRMAX at the end of epoch 5 -> LRMIN, never lower
    optimiser, loss     Adam (decoupled weight decay 0.01), cross-entropy, batch size 512
    augmentation        [PadCrop(4, reflect), FlipLR(), Cutout(8)] on training images only

    python train_fastai.py --find-lr        # the LR range test alone
    python train_fastai.py --epochs 24      # the recipe; runs the finder first unless given LRs
    python train_fastai.py --runs 5 --sweep lr_max=2e-3,4e-3   # 5 seeds of each point, compared

Every run writes a new folder <out>/<timestamp>[-name]/ and a row of <out>/index.csv; several runs
(--runs, --sweep) also write a group folder <out>/<timestamp>[-name]-group/ that summarises them.
docs/reference.md lists every file.
"""
import signal
import sys
from pathlib import Path

from cifar10_fast.core import settings
from cifar10_fast.core.lifecycle import INTERRUPTED, what_it_kept


def stop_while_loading(resumed):
    """Ctrl-C or SIGTERM while torch and fastai load: one line saying what the run folder keeps (a
    `resumed` one, its checkpoint; a new run, nothing yet), exit status 130, no traceback."""
    def stop(signum, frame):
        print(what_it_kept(Path(resumed) if resumed else None), file=sys.stderr)
        sys.exit(INTERRUPTED)

    return stop


if __name__ == "__main__":
    given = settings.parse_args(sys.argv[1:], __doc__)  # --help and bad flags answer before torch and fastai load
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop_while_loading(given.resume))

# The rest loads in seconds: it comes after the flags are checked. The imports make about half a
# million objects that live as long as the process: no collection looks through them while they
# load (a second of it on 2 cores) nor after (gc.freeze, below).
import gc

gc.disable()
import atexit
import json
import os
import warnings

from cifar10_fast.training.deferred_imports import without_unused

warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated")  # raised inside fastai's import
with without_unused():  # fastai's modules without scikit-learn and SciPy's stats: a run never calls them
    import fastai.callback.channelslast  # noqa: F401  Learner.to_channelslast, to_bf16 and to_fp16
    import pandas as pd
    import torch
    from accelerate.utils import broadcast_object_list
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    from fastai.metrics import accuracy
    from fastai.torch_core import num_distrib, rank_distrib

    import augment
    import compare
    from cifar10_fast.core.errors import one_line_errors
    from cifar10_fast.core.files import figures_to_files, write_json
    from cifar10_fast.core.lifecycle import hold, stops_cleanly
    from cifar10_fast.core.report import write_report
    from cifar10_fast.core.settings import UsageError, member
    from cifar10_fast.data.loaders import cifar10_data, cifar10_dataloaders
    from cifar10_fast.training.callbacks import LastTestPass, TimeToAccuracy, flip_tta_accuracy
    from cifar10_fast.training.distributed import as_if_alone, join_processes, scratch_folder, split_batches
    from cifar10_fast.training.fit import fit, load_checkpoint, resumed_config
    from cifar10_fast.training.hardware import (
        CpuEstimate,
        Phases,
        device_name,
        process_age,
        reports_out_of_memory,
        resolve_device,
        resolve_precision,
        seed_everything,
    )
    from cifar10_fast.training.lr_schedule import find_lr, one_cycle
    from cifar10_fast.training.optimizer import FusedAdamW
    from cifar10_fast.training.outputs import (
        new_run_dir,
        plain_model,
        summarize,
        write_classes,
        write_curves,
        write_export,
        write_interpretation,
        write_schedule,
    )
    from cifar10_fast.training.recording import FailOnHostSync, record_on_device
    from customresnet import CustomResNet

gc.enable()


def main(argv=None):
    figures_to_files()
    args = settings.parse_args(argv, __doc__)
    start_up = process_age() if __name__ == "__main__" else None  # Python and the imports, when run as a script
    # Bad input, the machine's included: one line, exit status 2. Ctrl-C or SIGTERM at any moment:
    # one line saying what the run kept and how to go on, exit status 130.
    with one_line_errors(args.debug), stops_cleanly(args.resume):
        if len(args.points) * args.runs == 1:
            run(member(args, args.points[0]), start_up=start_up)
        else:
            run_group(args, start_up)


def make_learner(dls, args, run_dir, precision):
    """The recipe's Learner: CustomResNet, cross-entropy, Adam with decoupled weight decay (none on
    BatchNorm and biases) stepped by torch's fused AdamW kernel; on a GPU, channels-last and mixed
    precision."""
    model = CustomResNet(num_classes=len(dls.vocab), width=args.width)
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(label_smoothing=args.label_smoothing),
                    opt_func=FusedAdamW, wd=args.wd, metrics=accuracy, path=run_dir)
    record_on_device(learn)  # the loss and accuracy stay on the GPU until the epoch's end
    if args.sync_debug:
        learn.add_cb(FailOnHostSync())
    if dls.device.type == "cuda":
        learn.to_channelslast(use_amp=False)  # the convolutions' fast layout on tensor cores
        if precision == "bf16":
            learn.to_bf16()
        elif precision == "fp16":
            learn.to_fp16()
    if args.compile:  # what it compiles, torch keeps for the next run (its FX graph and AOTAutograd caches)
        learn.model = torch.compile(learn.model)
    return learn


@reports_out_of_memory
def run(args, data=None, start_up=None):
    phases = Phases(start_up)  # where the run's time goes, into summary.json
    # Settings: the device, the processes, the precision, the seed.
    processes, device = join_processes(resolve_device(args.device))
    main_process = rank_distrib() == 0
    if args.bs % processes:
        raise UsageError(f"--bs {args.bs} does not split evenly over {processes} processes: give a multiple of {processes}")
    precision = resolve_precision(args.precision, device, args.sync_debug)
    seed_everything(args.seed, args.deterministic)

    # Data: CIFAR-10 through fastai's DataBlock, the augmentation on the device; a group's runs share `data`.
    data = data or cifar10_data(args.data)
    dls, stats = cifar10_dataloaders(data, bs=args.bs, device=device, subset=args.subset, workers=args.workers,
                                     seed=args.seed, on_device=args.aug == "gpu",
                                     augmentations=augment.training_augmentations(args.aug, args.seed))
    if len(dls.train) == 0:
        raise UsageError(f"{len(dls.train_ds)} training images make no full batch of --bs {args.bs}: "
                         "lower --bs or raise --subset")
    phases.end("data")

    # The learner, in its run folder.
    if main_process:  # the folder's parent, its --out, must take the run's index row in the end
        compare.check_index(Path(args.resume).parent if args.resume else args.out)
    if not main_process:
        run_dir = scratch_folder()
    else:
        run_dir = Path(args.resume) if args.resume else new_run_dir(args.out, args.name)
        hold(run_dir)  # one process at a time: a --resume of it meanwhile is refused (a resumed one is held already)
    learn = make_learner(dls, args, run_dir, precision)
    # Every setting, resolved; finder_iters joins them if the range test runs.
    config = {**{key: value for key, value in vars(args).items() if key != "finder_iters"},
              "lr_source": settings.lr_source(args.lr_min, args.lr_max),
              "data": str(data.folder), **data.fingerprint, "device": str(device), "precision": precision,
              "train_images": len(dls.train_ds), "test_images": len(dls.valid_ds), "classes": list(dls.vocab),
              "normalize_mean": stats[0], "normalize_std": stats[1], "run_dir": str(run_dir), "processes": processes,
              "bs_per_process": args.bs // processes}
    resumed = {}
    if args.resume:
        config = resumed_config(run_dir, config)
        resumed = load_checkpoint(learn, run_dir)
    print(f"run folder: {run_dir}\nconfig: {json.dumps(config)}")
    write_json(run_dir / "config.json", config)  # written again once the LRs are known
    phases.end("learner")

    # The LR range test, unless both LRs are given (a resumed run has them from its config), for
    # --finder-iters iterations however short the run: lr_find cycles the training set as needed.
    run_finder = args.find_lr or args.lr_min is None or args.lr_max is None
    # On a CPU, how long the run will take: printed after the first batches of the range test or the
    # fit (none where a resumed run's fit was done).
    if device.type == "cpu" and not resumed.get("fit_done"):
        epochs_to_run = 0 if args.find_lr else args.epochs - resumed.get("epochs_done", 0)
        passes_after_fit = 0 if args.find_lr else int(args.tta)  # flip TTA's mirrored pass
        learn.add_cb(CpuEstimate(args.finder_iters if run_finder else 0, epochs_to_run, passes_after_fit))
    lr_min, lr_max = args.lr_min, args.lr_max
    if run_finder:
        # The main process alone runs the range test, on whole batches; the others take its LRs.
        with as_if_alone():
            found = list(find_lr(learn, run_dir, args.finder_iters)) if main_process else [None, None]
        found_min, found_max = broadcast_object_list(found) if processes > 1 else found
        lr_min, lr_max = lr_min or found_min, lr_max or found_max
        config.update(lr_min=lr_min, lr_max=lr_max, finder_iters=args.finder_iters)
        write_json(run_dir / "config.json", config)
        phases.end("range_test")
    if args.find_lr:
        return
    if lr_min >= lr_max:
        raise UsageError(f"LRMIN {lr_min:.3g} is not below LRMAX {lr_max:.3g}: give both --lr-min and --lr-max")

    # The one-cycle fit.
    schedule = one_cycle(lr_min, lr_max, args.peak_epoch, args.epochs)
    print(f"training: {args.epochs} epochs, LR {lr_min:.3e} -> {lr_max:.3e} (epoch {args.peak_epoch:g}) "
          f"-> {lr_min:.3e}, Adam, wd {args.wd}, bs {args.bs}, {precision}, on {device_name(device)}"
          + (f", data-parallel: {processes} processes x {args.bs // processes} = an effective batch of {args.bs}"
             if processes > 1 else ""))
    time_to_accuracy = TimeToAccuracy(target=args.target_acc, resumed=resumed)
    last_test_pass = LastTestPass()  # the final model's test predictions, for the outputs
    split_batches(learn, processes)
    fit_seconds = fit(learn, schedule, run_dir, resumed, [time_to_accuracy, last_test_pass])  # keeps the weights
    learn.model = plain_model(learn)
    phases.end("fit")

    # Outputs: figures, summary, class names, the exported learner, the report, the index row.
    history = pd.read_csv(run_dir / "history.csv")
    predictions = last_test_pass.predictions(learn)
    write_schedule(learn, run_dir, lr_min, lr_max, resumed)
    write_curves(history, run_dir)
    write_interpretation(learn, run_dir, predictions)
    summary = {**summarize(history, learn, args, fit_seconds, device), **time_to_accuracy.results(),
               "compile_seconds": round(phases.compiling(), 3)}
    if args.tta:
        summary["tta_accuracy"] = flip_tta_accuracy(learn, *predictions[:2])
    write_json(run_dir / "summary.json", summary)
    write_classes(learn, run_dir, stats)
    write_export(learn, run_dir)
    write_report(run_dir)
    if main_process:  # the run folder's parent is its --out, also for a run resumed from another folder
        compare.append_to_index(run_dir.parent, run_dir, config, summary)
    phases.end("outputs")
    write_json(run_dir / "summary.json", {**summary, "phases": phases.seconds})  # where the time went, whole
    for name in ("checkpoint.pth", "checkpoint.json"):  # last: a run stopped before it resumes
        (run_dir / name).unlink(missing_ok=True)
    tta = f" ({100 * summary['tta_accuracy']:.2f}% with flip TTA)" if args.tta else ""
    stopped = f", stopped at --target-acc {args.target_acc}" if summary["stopped_early"] else ""
    compiled = f" and {summary['compile_seconds']:.1f} s compiling" if args.compile else ""
    print(f"final test accuracy {100 * summary['final_accuracy']:.2f}%{tta} after {summary['epochs']} epochs"
          f"{stopped}, fit {fit_seconds:.1f} s{compiled} of {phases.total():.1f} s in all; outputs in {run_dir}")
    return run_dir, summary


def run_group(args, start_up=None):
    """--runs seeds of every sweep point, each in its own run folder; the group folder lists them
    and holds their summary (mean, std, min, max per point) and compare.png."""
    if num_distrib() > 1:
        raise UsageError("--runs and --sweep run one process at a time: launch each run with accelerate, "
                         "or drop accelerate launch for the group")
    data = cifar10_data(args.data)  # set up once for every run, each checked before the first
    for point in args.points:
        data.check_subset(member(args, point).subset)
    group_dir = new_run_dir(args.out, f"{args.name}-group" if args.name else "group")
    print(f"group folder: {group_dir}: {len(args.points)} configuration(s) x {args.runs} seed(s)")
    members = []
    for point in args.points:
        for seed in range(args.seed, args.seed + args.runs):
            members.append(run(member(args, point, seed, group_dir.name), data=data, start_up=start_up)[0])
            start_up = None  # the first member's
            # The members so far, at once: a group stopped by a later member still lists them.
            group = {"members": [m.name for m in members], "sweep": args.sweep, "runs": args.runs}
            write_json(group_dir / "summary.json", group)
    runs = compare.load_runs(members)
    points_table = compare.points_table(runs)
    write_json(group_dir / "summary.json", {**group, "points": compare.records(points_table)})
    compare.write_figure(runs, group_dir / "compare.png")
    print(compare.format_points(points_table))
    print(f"group summary and compare.png in {group_dir}")


if __name__ == "__main__":
    # What the imports built lives as long as the process: frozen, no collection looks through it again
    # (about half a million objects; the run's full collections and those at exit took seconds).
    gc.freeze()
    main()
    # Everything the run writes is written and closed. The exit handlers run (file locks, worker
    # processes, temporary files); the interpreter's teardown of the libraries' objects, a second
    # of every run on 2 cores and nothing a user keeps, is skipped.
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
