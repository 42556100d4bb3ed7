"""Classify images with a trained CustomResNet.

    python predict.py IMAGE_OR_FOLDER... [--run RUN_DIR] [--topk K] [--csv out.csv] [--pickle]

Without --run it uses the reference checkpoint models/customresnet-cifar10.safetensors (the
recipe's 24-epoch weights, fp16) with models/customresnet-cifar10.json, so a fresh clone
predicts without training. With --run it reads RUN_DIR/model.safetensors and RUN_DIR/classes.json.
Both are plain tensors and JSON, which cannot run code. `--pickle` loads RUN_DIR/export.pkl with
fastai's `load_learner` instead; unpickling runs whatever code the file names, so use it only
on runs you made yourself.
Any image size or mode is accepted: it is converted to RGB and squashed (not cropped) to 32x32,
as in training.
"""
import argparse
import os
import sys
from pathlib import Path

from cifar10_fast.core import startup
from cifar10_fast.core.errors import BadInput, one_line_errors, printable, warn
from cifar10_fast.core.files import atomic, check_new_file, csv_text
from cifar10_fast.core.run_folder import CLASSES, EXPORT, EXPORT_PICKLE, WEIGHTS
from cifar10_fast.core.settings import OneLineParser, user_path
from cifar10_fast.data.images import has_image_extension

REFERENCE = Path(__file__).resolve().parent / "models" / "customresnet-cifar10"  # .safetensors and .json
# What fastai's import and load_learner warn of (torch.jit.script's deprecation, pickle's risk):
# predict's own note says what matters to a user of --pickle.
LIBRARY_WARNINGS = (".*torch.jit.script.*deprecated", "load_learner` uses Python's insecure pickle")
CLASSES_FIX = "give the classes.json that train_fastai.py wrote with these weights"
MIN_STD = 1e-6  # far below any real data's (CIFAR-10's is 0.25), far above where float32 normalising overflows


class PredictError(BadInput):
    """A problem with predict's input, worded as one line that says what to do."""


def weights_files(run_dir):
    """(weights, class names and normalisation) of a run folder, or of the reference checkpoint."""
    if run_dir is not None:
        files = run_dir / WEIGHTS, run_dir / CLASSES
        for path in files:
            if not path.is_file():
                raise PredictError(f"{path} is missing: give the folder of a finished training run "
                                   "(export.pkl is read only with --pickle, as it can run code)")
        return files
    files = REFERENCE.with_suffix(".safetensors"), REFERENCE.with_suffix(".json")
    for path in files:
        if not path.is_file():
            raise PredictError(f"the reference checkpoint {path} is not here: give --run RUN_DIR, or write it "
                               "from a 24-epoch run with `python -m bench.reference RUN_DIR`")
    return files


def image_paths(inputs):
    """The images to classify: the files given, and the files with an image extension in the
    folders given (at any depth, hidden ones left out); and the other files in those folders,
    which are skipped."""
    paths, skipped = [], []
    for given in map(Path, inputs):
        if given.is_dir():  # what is hidden in it (.ipynb_checkpoints/, .DS_Store) is none of the images
            files = sorted(p for p in given.rglob("*") if p.is_file() and not hidden(p.relative_to(given)))
            paths += [p for p in files if has_image_extension(p.name)]
            skipped += [p for p in files if not has_image_extension(p.name)]
        elif given.is_file():
            paths.append(given)
        elif given.exists():
            raise PredictError(f"{given} is not a regular file: give image files or folders of images")
        else:
            raise PredictError(f"{given} does not exist: give image files or folders of images")
    if not paths:
        raise PredictError(f"no images found in {', '.join(inputs)}: give image files or folders of images")
    return paths, skipped


def hidden(path):
    return any(part.startswith(".") for part in path.parts)


def skipped_line(skipped):
    """One line for the files of the folders given that are not images by their name."""
    examples = ", ".join(display_name(p.name) for p in skipped[:3]) + (", ..." if len(skipped) > 3 else "")
    return (f"skipped {len(skipped)} file{'s' if len(skipped) > 1 else ''} without an image extension in the folders "
            f"given ({examples}): give such a file by its own path to classify it")


def display_name(path):
    """The path as text that prints and goes into a UTF-8 CSV: bytes of the name that are not
    UTF-8 are written as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_arguments(args):
    """Everything about the request that can be refused before torch loads (seconds): the output
    file, the run folder and its files, the images."""
    if args.csv:
        check_new_file(args.csv, "--csv")
    if args.run_dir is not None and not args.run_dir.is_dir():
        raise PredictError(f"{args.run_dir} is not a folder: give --run a run folder written by train_fastai.py")
    if args.pickle and args.run_dir is None:
        raise PredictError("--pickle loads a run folder's export.pkl: give --run RUN_DIR")
    if not args.pickle:
        weights_files(args.run_dir)
    return image_paths(args.images)


def parse_args(argv=None):
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", help="image files or folders of images")
    p.add_argument("--run", type=user_path, dest="run_dir",
                   help="a run folder written by train_fastai.py (default: the reference checkpoint in models/)")
    p.add_argument("--topk", type=int, default=1, help="also show the next most likely classes (default 1)")
    p.add_argument("--csv", type=user_path, help="also write the predictions to this CSV file (never overwritten)")
    p.add_argument("--pickle", action="store_true",
                   help="load export.pkl with fastai (runs code from the file) instead of model.safetensors")
    p.add_argument("--debug", action="store_true", help="on an error, show the traceback too")
    args = p.parse_args(argv)
    if args.topk < 1:
        p.error(f"--topk must be at least 1, not {args.topk}")
    return args


def checked_request(argv):
    """The flags, and everything about the request that can be refused before torch loads."""
    args = parse_args(argv)
    with one_line_errors(args.debug):
        check_arguments(args)
    return args


startup.flags_first(__name__, checked_request)

# The rest loads torch (seconds): it comes after the checks.
import json
import warnings
from collections import Counter

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from cifar10_fast.data.images import read_rgb32
from customresnet import CustomResNet


def read_classes(meta):
    """The class names and the normalisation (mean, std as (3, 1, 1) tensors) in classes.json, or
    the reference's .json."""
    try:
        info = json.loads(meta.read_text())
        classes = info["classes"]
        mean, std = (np.asarray(info[key], dtype=np.float64) for key in ("mean", "std"))
    except (ValueError, KeyError, TypeError) as e:  # not JSON (or not UTF-8), a key missing, a value not numbers
        raise PredictError(f"{meta} cannot be read as class names and normalisation ({type(e).__name__}: {e}): "
                           f"{CLASSES_FIX}") from e
    check_class_names(classes, meta)
    check_normalisation(mean, std, info, meta)
    mean, std = (torch.tensor(values, dtype=torch.float32).view(3, 1, 1) for values in (mean, std))
    return classes, mean, std


def check_class_names(classes, meta):
    """A string or an object would pass as names letter by letter or key by key, and a repeated
    or empty name would make two classes one on screen, so each is refused."""
    if not isinstance(classes, list) or not all(isinstance(name, str) and name.strip() for name in classes):
        raise PredictError(f'{meta}: "classes" must be a list of class names, each a non-empty string: {CLASSES_FIX}')
    repeated = [name for name, count in Counter(classes).items() if count > 1]
    if repeated:
        raise PredictError(f'{meta}: "classes" names {", ".join(repeated)} more than once: {CLASSES_FIX}')


def check_normalisation(mean, std, info, meta):
    """mean and std are those of the training pixels in [0, 1]: other values were never what
    training normalised with, and a huge mean or a std near 0 makes every probability NaN."""
    usable = mean.shape == std.shape == (3,) and np.isfinite([mean, std]).all() \
        and ((0 <= mean) & (mean <= 1)).all() and (std >= MIN_STD).all()
    if not usable:
        raise PredictError(f'{meta}: "mean" and "std" must be 3 finite numbers each, one per RGB channel, the mean '
                           f"in [0, 1] and the std at least {MIN_STD:g}, not {info['mean']} and {info['std']}: "
                           f"{CLASSES_FIX}")


def load_model(weights):
    """CustomResNet with the given weights; its width and number of classes are read off them."""
    try:
        state = load_file(weights)
        model = CustomResNet(num_classes=state["head.2.bias"].shape[0], width=state["prep.0.weight"].shape[0])
        model.load_state_dict(state)  # the reference's fp16 tensors are copied into fp32 parameters
    except (SafetensorError, KeyError, RuntimeError, ValueError) as e:
        raise PredictError(f"{weights} does not hold CustomResNet weights that train_fastai.py wrote "
                           f"({type(e).__name__}): train a run first") from e
    return model.eval()


@torch.no_grad()
def predict_safetensors(run_dir, paths):
    weights, meta = weights_files(run_dir)
    classes, mean, std = read_classes(meta)
    model = load_model(weights)
    outputs = model.head[-1].out_features
    if outputs != len(classes):
        raise PredictError(f"{meta} names {len(classes)} classes, but {weights} has {outputs} outputs: {CLASSES_FIX}")
    images = torch.from_numpy(np.stack([read_rgb32(p)[0] for p in paths])).permute(0, 3, 1, 2)
    probs = [model(((batch.float() / 255 - mean) / std)).softmax(1) for batch in images.split(512)]
    return torch.cat(probs), classes


def load_exported_learner(export):
    """fastai's learner in export.pkl. Unpickling it runs the code the file names, so a note says so first."""
    print(f"note: unpickling {export} runs code named in the file; use --pickle only on your own runs",
          file=sys.stderr)
    with warnings.catch_warnings():
        for message in LIBRARY_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        # fastai is needed only to unpickle the learner, and takes seconds to import.
        from fastai.learner import load_learner
        try:
            return load_learner(export, cpu=True, pickle_module=EXPORT_PICKLE)
        except Exception as e:  # unpickling raises whatever the file's code does: the file is at fault
            raise PredictError(f"{export} is not a learner that train_fastai.py exported ({type(e).__name__}); "
                               "whatever code it names has run: delete it, and give --pickle only runs you "
                               "made") from e


def predict_pickle(run_dir, paths):
    export = run_dir / EXPORT
    if not export.is_file():
        raise PredictError(f"{export} is missing: give the folder of a finished training run")
    for path in paths:
        read_rgb32(path)  # one clear error for an unreadable file, before fastai's own
    learn = load_exported_learner(export)
    with learn.no_bar():
        probs, _ = learn.get_preds(dl=learn.dls.test_dl(paths, num_workers=0))
    return probs, list(learn.dls.vocab)


def predictions_table(paths, probs, classes, topk):
    top_probs, top_idxs = probs.topk(min(topk, len(classes)), dim=1)
    rows = []
    for path, ps, idxs in zip(paths, top_probs.tolist(), top_idxs.tolist()):
        row = {"image": display_name(path)}
        for rank, (p, i) in enumerate(zip(ps, idxs), 1):
            suffix = "" if rank == 1 else f"_{rank}"
            row[f"class{suffix}"], row[f"probability{suffix}"] = classes[i], round(p, 4)
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv=None):
    args = parse_args(argv)
    with one_line_errors(args.debug):
        paths, skipped = check_arguments(args)
        if skipped:
            warn(skipped_line(skipped))
        predict = predict_pickle if args.pickle else predict_safetensors
        probs, classes = predict(args.run_dir, paths)
        if args.topk > len(classes):
            warn(f"--topk {args.topk} is more than the {len(classes)} classes of the model: showing all of them")
        table = predictions_table(paths, probs, classes, args.topk)
        print(table.map(printable).to_string(index=False))
        if args.csv:
            with atomic(args.csv) as tmp:
                table.map(csv_text).to_csv(tmp, index=False)


if __name__ == "__main__":
    startup.run(main)
