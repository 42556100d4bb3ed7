"""Publish a finished 24-epoch run of the recipe as the reference checkpoint that predict.py uses
when it is given no run folder.

    python train_fastai.py --epochs 24 --name reference
    python bench/reference.py runs/<timestamp>-reference        # writes models/customresnet-cifar10.*

Writes models/customresnet-cifar10.safetensors (the weights in fp16, about 13 MB) and
models/customresnet-cifar10.json (accuracy, recipe, data copy, the command, and the class names and
normalisation predict.py needs). Only a run of the recipe itself (24 epochs, width 64, every
training image) is accepted, and an existing reference is never overwritten.
"""
import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from safetensors.torch import load_file, save_file  # noqa: E402

from predict import REFERENCE  # noqa: E402
from files import write_json  # noqa: E402

RECIPE = {"epochs": 24, "width": 64, "subset": None}


class ReferenceError(Exception):
    """A run that cannot be the reference, worded as one line that says what to do."""


def read_run(run_dir):
    files = {name: run_dir / f"{name}.json" for name in ("config", "summary", "classes")}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing or not (run_dir / "model.safetensors").is_file():
        raise ReferenceError(f"{run_dir} is not a finished training run ({', '.join(missing) or 'no model.safetensors'}):"
                             " give the folder train_fastai.py wrote")
    return {name: json.loads(path.read_text()) for name, path in files.items()}


def write_reference(run_dir, models=REFERENCE.parent):
    run = read_run(run_dir)
    config = run["config"]
    off_recipe = {key: config.get(key) for key, value in RECIPE.items() if config.get(key) != value}
    if off_recipe:
        raise ReferenceError(f"{run_dir} is not the recipe ({', '.join(f'{k}={v}' for k, v in off_recipe.items())}; "
                             f"the reference is {', '.join(f'{k}={v}' for k, v in RECIPE.items())}): "
                             "train one with `python train_fastai.py --epochs 24`")
    weights, meta = (models / REFERENCE.name).with_suffix(".safetensors"), (models / REFERENCE.name).with_suffix(".json")
    for path in (weights, meta):
        if path.exists():
            raise ReferenceError(f"{path} exists already: move it away first, it is never overwritten")
    models.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.half() if tensor.is_floating_point() else tensor
             for name, tensor in load_file(run_dir / "model.safetensors").items()}
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


def config_flags(config):
    """The flags that repeat the run, from its config.json."""
    names = ("epochs", "peak_epoch", "bs", "wd", "seed", "aug", "precision", "width", "lr_min", "lr_max")
    return [f"--{name.replace('_', '-')} {config[name]}" for name in names if config.get(name) is not None]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, help="a finished 24-epoch run folder written by train_fastai.py")
    p.add_argument("--models", type=Path, default=REFERENCE.parent, help="where to write it (default models/)")
    args = p.parse_args(argv)
    try:
        weights, meta = write_reference(args.run_dir, args.models)
    except ReferenceError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"reference checkpoint: {weights} ({weights.stat().st_size / 2**20:.1f} MiB) and {meta}")


if __name__ == "__main__":
    main()
