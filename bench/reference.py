"""Publish a finished 24-epoch run of the recipe as the reference checkpoint that predict.py uses
when it is given no run folder.

    python train_fastai.py --epochs 24 --name reference
    python -m bench.reference runs/<timestamp>-reference        # writes models/customresnet-cifar10.*

Writes models/customresnet-cifar10.safetensors (the weights in fp16, about 13 MB) and
models/customresnet-cifar10.json (accuracy, recipe, data copy, the command, and the class names and
normalisation predict.py needs). Only a run of the recipe itself (the seed preset's settings, width 64,
every training image, all 24 epochs run, weights of width 64) is accepted, and an existing reference
is never overwritten.
"""
import argparse
import json
from pathlib import Path

from cifar10_fast.core import settings, startup
from cifar10_fast.core.config import RECIPE
from cifar10_fast.core.errors import BadInput, one_line_errors

REPO = Path(__file__).resolve().parents[1]

# Every setting of config.json that makes the run the recipe: the seed preset's, and no thin model,
# subset or early stop. The LRs are the run's own (its finder's or the flags').
RECIPE_SETTINGS = {name: getattr(RECIPE, name) for name in ("preset", "epochs", "bs", "wd", "label_smoothing", "tta",
                                                            "target_acc", "width", "subset")}
# What the reference's .json takes from each file of the run (check_recipe reads RECIPE_SETTINGS too).
RECORDED = {"config": ("epochs", "peak_epoch", "bs", "lr_min", "lr_max", "lr_source", "wd", "aug", "precision",
                       "width", "seed", "test_images", "data"),
            "summary": ("final_accuracy", "fit_seconds", "device", "versions"),
            "classes": ("classes", "mean", "std")}
RUN_FIX = "give the folder train_fastai.py wrote, as it wrote it"


class ReferenceError(BadInput):
    """A run that cannot be the reference, worded as one line that says what to do."""


def parse_args(argv=None):
    p = settings.OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, help="a finished 24-epoch run folder written by train_fastai.py")
    p.add_argument("--models", type=Path, help="where to write it (default models/)")
    p.add_argument("--debug", action="store_true", help="on an error, show the traceback too")
    args = p.parse_args(argv)
    if args.models and args.models.exists() and not args.models.is_dir():  # else a FileExistsError from its mkdir
        p.error(f"--models {args.models} is not a folder: give a folder for the reference (a missing one is created)")
    return args


def read_run(run_dir):
    """The run's config, summary and classes, each refused, named, if it is missing or damaged."""
    files = {name: run_dir / f"{name}.json" for name in RECORDED}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing or not (run_dir / "model.safetensors").is_file():
        lacking = ", ".join(missing) or "no model.safetensors"
        raise ReferenceError(f"{run_dir} is not a finished training run ({lacking}): give the folder train_fastai.py "
                             "wrote")
    return {name: read_json(path, RECORDED[name]) for name, path in files.items()}


def read_json(path, keys):
    try:
        content = json.loads(path.read_text())
    except ValueError as e:  # not JSON (a file cut short), or not UTF-8 text
        raise ReferenceError(f"{path} is damaged ({type(e).__name__}): {RUN_FIX}") from None
    lacking = [key for key in keys if not isinstance(content, dict) or key not in content]
    if lacking:
        raise ReferenceError(f"{path} is damaged (no {lacking[0]}): {RUN_FIX}")
    return content


def check_recipe(run_dir, run):
    """Refuse a run whose settings are not the recipe's, or that stopped before its last epoch."""
    config, summary = run["config"], run["summary"]
    off_recipe = {key: config.get(key) for key, value in RECIPE_SETTINGS.items() if config.get(key) != value}
    if off_recipe:
        raise ReferenceError(f"{run_dir} is not the recipe ({', '.join(f'{k}={v}' for k, v in off_recipe.items())}; "
                             f"the reference is {', '.join(f'{k}={v}' for k, v in RECIPE_SETTINGS.items())}): "
                             "train one with `python train_fastai.py --epochs 24`")
    # --target-acc is refused above; a run that ran fewer epochs than it was given is no 24-epoch run either.
    if summary.get("stopped_early") or summary.get("epochs", config["epochs"]) < config["epochs"]:
        raise ReferenceError(f"{run_dir} stopped after {summary.get('epochs')} of its {config['epochs']} epochs: "
                             "give a run that finished all of them")


def check_run(args):
    """Everything about the run that can be refused from its JSON files, before torch loads."""
    with one_line_errors(args.debug):
        check_recipe(args.run_dir, read_run(args.run_dir))


def checked_run(argv):
    """The flags, and a run that is not the recipe, answered before torch loads."""
    args = parse_args(argv)
    check_run(args)
    return args


startup.flags_first(__name__, checked_run)

# The rest loads torch (seconds): it comes after the checks.
from safetensors.torch import load_file, save_file

from cifar10_fast.core.files import write_json
from predict import REFERENCE, read_classes


def write_reference(run_dir, models=None):
    run = read_run(run_dir)
    config = run["config"]
    check_recipe(run_dir, run)
    read_classes(run_dir / "classes.json")  # what predict.py will read: refused here, not in every later predict
    models = models or REFERENCE.parent
    state = recipe_weights(run_dir, config)
    weights, meta = (models / REFERENCE.name).with_suffix(".safetensors"), (models / REFERENCE.name).with_suffix(
        ".json")
    for path in (weights, meta):
        if path.exists():
            raise ReferenceError(f"{path} exists already: move it away first, it is never overwritten")
    models.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.half() if tensor.is_floating_point() else tensor for name, tensor in state.items()}
    save_file(state, weights, metadata={"format": "pt", "model": "CustomResNet", "dtype": "float16"})
    summary = run["summary"]
    write_json(meta, {
        **run["classes"],  # classes, mean, std: what predict.py needs
        "final_accuracy": summary["final_accuracy"],  # the last epoch's, never the best one
        "test_images": config["test_images"], "data": config["data"],
        "recipe": {key: config[key] for key in ("epochs", "peak_epoch", "bs", "lr_min", "lr_max", "lr_source", "wd",
                                                "aug", "precision", "width", "seed")},
        "fit_seconds": summary["fit_seconds"], "device": summary["device"], "versions": summary["versions"],
        "command": "python train_fastai.py " + " ".join(config_flags(config)),
        "run": run_dir.name,
    })
    return weights, meta


def recipe_weights(run_dir, config):
    """The run's weights, refused if they are not the width its config.json says (a copied model)."""
    state = load_file(run_dir / "model.safetensors")
    width = state["prep.0.weight"].shape[0] if "prep.0.weight" in state else None  # the first conv's out channels
    if width != config["width"]:
        raise ReferenceError(f"{run_dir / 'model.safetensors'} holds weights of width {width}, but its config.json "
                             f"says {config['width']}: {RUN_FIX}")
    return state


def config_flags(config):
    """The flags that repeat the run, from its config.json. The settings check_recipe holds to the
    recipe (--label-smoothing, --target-acc, --subset, ...) are at their defaults, so need no flag."""
    names = ("epochs", "peak_epoch", "bs", "wd", "seed", "aug", "precision", "width", "lr_min", "lr_max")
    return [f"--{name.replace('_', '-')} {config[name]}" for name in names if config.get(name) is not None]


def main(argv=None):
    args = parse_args(argv)
    with one_line_errors(args.debug):
        weights, meta = write_reference(args.run_dir, args.models)
    print(f"reference checkpoint: {weights} ({weights.stat().st_size / 2**20:.1f} MiB) and {meta}")


if __name__ == "__main__":
    startup.run(main)
