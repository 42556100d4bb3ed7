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
import os
from pathlib import Path

from cifar10_fast.core import startup
from cifar10_fast.core.errors import one_line_errors
from cifar10_fast.core.lifecycle import what_it_kept
from cifar10_fast.core.settings import parse_args
from cifar10_fast.data.layout import check_folder


def checked_flags(argv):
    """The flags, and a data folder whose layout cannot train, answered before torch loads."""
    config = parse_args(argv, __doc__)
    data = config.data or os.environ.get("CIFAR10_DATA")
    if data and not config.resume and Path(data).expanduser().is_dir():
        with one_line_errors(config.debug):
            check_folder(Path(data).expanduser())
    return config


startup.flags_first(__name__, checked_flags,
                    lambda config: what_it_kept(Path(config.resume) if config.resume else None))

# The heavy modules load after the flags are checked: seconds.
import warnings

from cifar10_fast.training.deferred_imports import without_unused

warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated")  # raised inside fastai's import
with without_unused():  # fastai's modules without scikit-learn and SciPy's stats: a run never calls them
    import fastai.callback.channelslast  # noqa: F401  Learner.to_channelslast, to_bf16 and to_fp16
    import torch
    from accelerate.utils import broadcast_object_list
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    from fastai.metrics import accuracy
    from fastai.torch_core import num_distrib, rank_distrib

    import augment
    from cifar10_fast.core import report, run_folder
    from cifar10_fast.core.config import UsageError, departures, lr_source, member, record
    from cifar10_fast.core.errors import counted
    from cifar10_fast.core.files import figures_to_files
    from cifar10_fast.core.groups import is_group
    from cifar10_fast.core.lifecycle import hold, outliving_the_terminal, stops_cleanly
    from cifar10_fast.core.run_folder import is_group_folder
    from cifar10_fast.data.loaders import cifar10_data, cifar10_dataloaders
    from cifar10_fast.training.callbacks import LastTestPass, TimeToAccuracy, flip_tta_accuracy
    from cifar10_fast.training.distributed import as_if_alone, join_processes, scratch_folder, split_batches
    from cifar10_fast.training.fit import fit, load_checkpoint, plain_model, resumed_config
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
    from cifar10_fast.training.outputs import new_run_dir, summarize, write_outputs
    from cifar10_fast.training.recording import FailOnHostSync, record_on_device
    from cifar10_fast.training.tracking import Tracking
    from customresnet import CustomResNet


def main(argv=None):
    figures_to_files()
    config = parse_args(argv, __doc__)
    start_up = process_age() if __name__ == "__main__" else None  # Python and the imports, when run as a script
    # Bad input, the machine's included: one line, exit status 2. Ctrl-C or SIGTERM at any moment:
    # one line saying what the run kept and how to go on, exit status 130.
    with outliving_the_terminal(), one_line_errors(config.debug), stops_cleanly(config.resume):
        if is_group(config) or is_group_folder(config.resume or ""):
            run_group(config)
        else:
            run(member(config, {}), start_up=start_up)


def make_learner(dls, config, run_dir, precision):
    """The recipe's Learner: CustomResNet, cross-entropy, Adam with decoupled weight decay (none on
    BatchNorm and biases) stepped by torch's fused AdamW kernel; on a GPU, channels-last and mixed
    precision."""
    model = CustomResNet(num_classes=len(dls.vocab), width=config.width)
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(label_smoothing=config.label_smoothing),
                    opt_func=FusedAdamW, wd=config.wd, metrics=accuracy, path=run_dir)
    record_on_device(learn)  # the loss and accuracy stay on the GPU until the epoch's end
    if config.sync_debug:
        learn.add_cb(FailOnHostSync())
    if dls.device.type == "cuda":
        learn.to_channelslast(use_amp=False)  # the convolutions' fast layout on tensor cores
        if precision == "bf16":
            learn.to_bf16()
        elif precision == "fp16":
            learn.to_fp16()
    if config.compile:  # what it compiles, torch keeps for the next run (its FX graph and AOTAutograd caches)
        learn.model = torch.compile(learn.model)
    return learn


@reports_out_of_memory
def run(config, data=None, start_up=None, callbacks=()):
    phases = Phases(start_up)  # where the run's time goes, into summary.json
    # Settings: the device, the processes, the precision, the seed.
    processes, device = join_processes(resolve_device(config.device))
    main_process = rank_distrib() == 0
    if config.bs % processes:
        raise UsageError(f"--bs {config.bs} does not split evenly over {processes} processes: give a multiple of "
                         f"{processes}")
    precision = resolve_precision(config.precision, device, config.sync_debug)
    seed_everything(config.seed, config.deterministic)

    # Data: CIFAR-10 through fastai's DataBlock, the augmentation on training images only, on the
    # device by default; a group's runs share `data`.
    data = data or cifar10_data(config.data)
    dls, stats = cifar10_dataloaders(data, bs=config.bs, device=device, subset=config.subset, workers=config.workers,
                                     seed=config.seed, on_device=config.aug == "gpu", holdout=config.holdout,
                                     augmentations=augment.training_augmentations(config.aug, config.seed))
    if len(dls.train) == 0:
        raise UsageError(f"{len(dls.train_ds)} training images make no full batch of --bs {config.bs}: "
                         "lower --bs or raise --subset")
    phases.end("data")

    # The learner, in its run folder.
    if main_process:  # the folder's parent, its --out, must take the run's index row in the end
        run_folder.check_index(Path(config.resume).resolve().parent if config.resume else config.out)
    if not main_process:
        run_dir = scratch_folder()
    else:
        run_dir = Path(config.resume) if config.resume else new_run_dir(config.out, config.name)
        hold(run_dir)  # one process at a time: a --resume of it meanwhile is refused (a resumed one is held already)
    learn = make_learner(dls, config, run_dir, precision)
    # Every setting, resolved; finder_iters joins them if the range test runs.
    recorded = {**{key: value for key, value in record(config).items() if key != "finder_iters"},
                "lr_source": lr_source(config.lr_min, config.lr_max),
                "data": str(data.folder), **data.fingerprint, "device": str(device), "precision": precision,
                "train_images": len(dls.train_ds), "test_images": len(dls.valid_ds), "classes": list(dls.vocab),
                "normalize_mean": stats[0], "normalize_std": stats[1], "run_dir": str(run_dir), "processes": processes,
                "bs_per_process": config.bs // processes,
                # What the "test" figures are of: a search's trials test on training images held out.
                "tested_on": "held-out training images" if config.holdout else "the test set"}
    resumed = {}
    if config.resume:
        recorded = resumed_config(run_dir, recorded)
        resumed = load_checkpoint(learn, run_dir)
    print(f"run folder: {run_dir}\n{settings_line(recorded)}")
    run_folder.write_config(run_dir, recorded)  # written again once the LRs are known
    phases.end("learner")

    # The LR range test, unless both LRs are given (a resumed run has them from its config), for
    # --finder-iters iterations however short the run: lr_find cycles the training set as needed.
    run_finder = config.find_lr or config.lr_min is None or config.lr_max is None
    # On a CPU, how long the run will take: printed after the first batches of the range test or the
    # fit (none where a resumed run's fit was done).
    if device.type == "cpu" and not resumed.get("fit_done"):
        epochs_to_run = 0 if config.find_lr else config.epochs - resumed.get("epochs_done", 0)
        passes_after_fit = 0 if config.find_lr else int(config.tta)  # flip TTA's mirrored pass
        learn.add_cb(CpuEstimate(config.finder_iters if run_finder else 0, epochs_to_run, passes_after_fit))
    lr_min, lr_max = config.lr_min, config.lr_max
    if run_finder:
        # The main process alone runs the range test, on whole batches; the others take its LRs.
        with as_if_alone():
            found = list(find_lr(learn, run_dir, config.finder_iters)) if main_process else [None, None]
        found_min, found_max = broadcast_object_list(found) if processes > 1 else found
        lr_min, lr_max = lr_min or found_min, lr_max or found_max
        recorded.update(lr_min=lr_min, lr_max=lr_max, finder_iters=config.finder_iters)
        run_folder.write_config(run_dir, recorded)
        phases.end("range_test")
    if config.find_lr:
        return
    if lr_min >= lr_max:
        raise UsageError(f"LRMIN {lr_min:.3g} is not below LRMAX {lr_max:.3g}: give both --lr-min and --lr-max")

    # The one-cycle fit.
    schedule = one_cycle(lr_min, lr_max, config.peak_epoch, config.epochs)
    print(f"training: {counted(config.epochs, 'epoch')}, LR {lr_min:.3e} -> {lr_max:.3e} (epoch {config.peak_epoch:g}) "
          f"-> {lr_min:.3e}, Adam, wd {config.wd}, bs {config.bs}, {precision}, on {device_name(device)}"
          + (f", data-parallel: {processes} processes x {config.bs // processes} = an effective batch of {config.bs}"
             if processes > 1 else ""))
    time_to_accuracy = TimeToAccuracy(target=config.target_acc, resumed=resumed)
    last_test_pass = LastTestPass()  # the final model's test predictions, for the outputs
    split_batches(learn, processes)
    # The trackers (TensorBoard by default) show the fit as it goes and the run once whole; closed
    # however the run ends.
    with Tracking(config.track if main_process else (), run_dir, recorded, resumed) as tracking:
        fit_seconds = fit(learn, schedule, run_dir, resumed,
                          [time_to_accuracy, last_test_pass, tracking.callback(), *callbacks])
        learn.model = plain_model(learn)  # the fit kept its weights
        phases.end("fit")

        # Outputs: the summary, the figures, the class names, the exported learner, the report, the index row.
        predictions = last_test_pass.predictions(learn)
        summary = {**summarize(learn, run_dir, config, fit_seconds, device), **time_to_accuracy.results(),
                   "compile_seconds": round(phases.compiling(), 3)}
        if config.tta:
            summary["tta_accuracy"] = flip_tta_accuracy(learn, *predictions[:2])
        write_outputs(learn, run_dir, summary, predictions, stats, (lr_min, lr_max), resumed)
        if main_process:  # the run folder's parent is its --out, for a run resumed from elsewhere, as ".", or linked
            run_folder.append_to_index(run_dir.resolve().parent, run_dir.resolve(), recorded, summary)
        phases.end("outputs")
        run_folder.write_summary(run_dir, {**summary, "phases": phases.seconds})  # where the time went, whole
        run_folder.remove_checkpoint(run_dir)  # a run stopped before it resumes
        tracking.finish(summary)  # last: its files as they stay
    tta = f" ({100 * summary['tta_accuracy']:.2f}% with flip TTA)" if config.tta else ""
    stopped = f", stopped at --target-acc {config.target_acc}" if summary["stopped_early"] else ""
    compiled = f" and {summary['compile_seconds']:.1f} s compiling" if config.compile else ""
    # A resumed fit's seconds are those of all its sessions; this process's are part of them.
    seconds = (f"fit {fit_seconds:.1f} s{compiled} of {phases.total():.1f} s in all" if not config.resume else
               f"fit {fit_seconds:.1f} s in all its sessions{compiled}, this one {phases.total():.1f} s")
    print(f"final {report.tested_on(recorded)} accuracy {100 * summary['final_accuracy']:.2f}%{tta} after "
          f"{counted(summary['epochs'], 'epoch')}{stopped}, {seconds}; outputs in {run_dir}")
    return run_dir, summary


def settings_line(recorded):
    """One line of what the run runs: the recipe, or the flags it departs from it by, on how many
    images, where; config.json has every setting."""
    changed = departures(recorded)
    recipe = f"the recipe with {' '.join(changed)}" if changed else "the recipe"
    return (f"settings: {recipe}; {report.images_line(recorded)}; {recorded['device']}, {recorded['precision']} "
            "(config.json has every setting)")


def run_group(config):
    """Seeds of every point of a --sweep grid, or a --search: one Optuna study whose trials are runs,
    each in its own run folder, trained by --parallel workers; the group folder holds the study, its
    summary (mean, std, min, max per point), compare.png and, for a search, its figures."""
    if num_distrib() > 1:
        raise UsageError("--runs, --sweep and --search start their own workers: launch each run with accelerate, "
                         "or drop accelerate launch for the group")
    from cifar10_fast.experiments.runner import run_group as run_study  # Optuna: only groups load it
    run_study(config, train=run, data_of=group_data)


def group_data(config):
    """The data every run of a group trains on, set up once in each worker."""
    return cifar10_data(config.data)


if __name__ == "__main__":
    startup.run(main)
