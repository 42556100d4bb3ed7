"""Classify images with a trained CustomResNet.

    python predict.py IMAGE_OR_FOLDER... [--run RUN_DIR] [--topk K] [--csv out.csv] [--pickle]

Without --run it uses the reference checkpoint models/customresnet-cifar10.safetensors (the
recipe's 24-epoch weights, fp16) with models/customresnet-cifar10.json, so a fresh clone
predicts without training. With --run it reads RUN_DIR/model.safetensors and RUN_DIR/classes.json.
Both are plain tensors and JSON, which cannot run code. `--pickle` loads RUN_DIR/export.pkl with
fastai's `load_learner` instead; unpickling runs whatever code the file names, so use it only
on runs you made yourself.
Any image size or mode is accepted: it is converted to RGB and resized to 32x32.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from customresnet import CustomResNet
from files import atomic
from images import read_rgb32

REFERENCE = Path(__file__).resolve().parent / "models" / "customresnet-cifar10"  # .safetensors and .json
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


class PredictError(Exception):
    """A problem with predict's input, worded as one line that says what to do."""


def weights_files(run_dir):
    """(weights, class names and normalisation) of a run folder, or of the reference checkpoint."""
    if run_dir is not None:
        files = run_dir / "model.safetensors", run_dir / "classes.json"
        for path in files:
            if not path.is_file():
                raise PredictError(f"{path} is missing: give the folder of a finished training run "
                                   "(export.pkl is read only with --pickle, as it can run code)")
        return files
    files = REFERENCE.with_suffix(".safetensors"), REFERENCE.with_suffix(".json")
    for path in files:
        if not path.is_file():
            raise PredictError(f"the reference checkpoint {path} is not here: give --run RUN_DIR, or write it "
                               "from a 24-epoch run with `python bench/reference.py RUN_DIR`")
    return files


def load_model(weights, meta):
    """CustomResNet with the given weights, its class names and its normalisation."""
    try:
        state = load_file(weights)
        info = json.loads(meta.read_text())
        classes, mean, std = info["classes"], info["mean"], info["std"]
        # The width is not stored separately: the prep layer's conv says it.
        model = CustomResNet(num_classes=len(classes), width=state["prep.0.weight"].shape[0])
        model.load_state_dict(state)  # the reference's fp16 tensors are copied into fp32 parameters
    except (SafetensorError, KeyError, RuntimeError, ValueError) as e:
        raise PredictError(f"{weights} does not hold CustomResNet weights that train_fastai.py wrote "
                           f"({type(e).__name__}): train a run first") from None
    return model.eval(), classes, torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)


def image_paths(inputs):
    paths = []
    for given in map(Path, inputs):
        if given.is_dir():
            paths += sorted(p for p in given.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        elif given.is_file():
            paths.append(given)
        else:
            raise PredictError(f"{given} does not exist: give image files or folders of images")
    if not paths:
        raise PredictError(f"no images found in {', '.join(inputs)}: give image files or folders of images")
    return paths


def read_image(path):
    try:
        return read_rgb32(path)[0]
    except Exception as e:
        raise PredictError(f"cannot read image {path} ({type(e).__name__}): give PNG, JPEG or another "
                           "image format PIL reads") from None


@torch.no_grad()
def predict_safetensors(run_dir, paths):
    model, classes, mean, std = load_model(*weights_files(run_dir))
    images = torch.from_numpy(np.stack([read_image(p) for p in paths])).permute(0, 3, 1, 2)
    probs = [model(((batch.float() / 255 - mean) / std)).softmax(1) for batch in images.split(512)]
    return torch.cat(probs), classes


def predict_pickle(run_dir, paths):
    # fastai is needed only to unpickle the learner, and takes seconds to import.
    from fastai.learner import load_learner
    export = run_dir / "export.pkl"
    if not export.is_file():
        raise PredictError(f"{export} is missing: give the folder of a finished training run")
    print(f"note: unpickling {export} runs code named in the file; use --pickle only on your own runs",
          file=sys.stderr)
    for path in paths:
        read_image(path)  # one clear error for an unreadable file, before fastai's own
    learn = load_learner(export, cpu=True)
    with learn.no_bar():
        probs, _ = learn.get_preds(dl=learn.dls.test_dl(paths, num_workers=0))
    return probs, list(learn.dls.vocab)


def predictions_table(paths, probs, classes, topk):
    top_probs, top_idxs = probs.topk(min(topk, len(classes)), dim=1)
    rows = []
    for path, ps, idxs in zip(paths, top_probs.tolist(), top_idxs.tolist()):
        row = {"image": str(path)}
        for rank, (p, i) in enumerate(zip(ps, idxs), 1):
            suffix = "" if rank == 1 else f"_{rank}"
            row[f"class{suffix}"], row[f"probability{suffix}"] = classes[i], round(p, 4)
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", help="image files or folders of images")
    p.add_argument("--run", type=Path, dest="run_dir",
                   help="a run folder written by train_fastai.py (default: the reference checkpoint in models/)")
    p.add_argument("--topk", type=int, default=1, help="also show the next most likely classes (default 1)")
    p.add_argument("--csv", type=Path, help="also write the predictions to this CSV file")
    p.add_argument("--pickle", action="store_true",
                   help="load export.pkl with fastai (runs code from the file) instead of model.safetensors")
    p.add_argument("--debug", action="store_true", help="on an error, show the traceback too")
    args = p.parse_args(argv)
    if args.topk < 1:
        p.error(f"--topk must be at least 1, not {args.topk}")
    try:
        if args.csv and args.csv.exists():
            raise PredictError(f"{args.csv} exists already: give --csv a new file name")
        if args.run_dir is not None and not args.run_dir.is_dir():
            raise PredictError(f"{args.run_dir} is not a folder: give --run a run folder written by train_fastai.py")
        if args.pickle and args.run_dir is None:
            raise PredictError("--pickle loads a run folder's export.pkl: give --run RUN_DIR")
        paths = image_paths(args.images)
        predict = predict_pickle if args.pickle else predict_safetensors
        probs, classes = predict(args.run_dir, paths)
        table = predictions_table(paths, probs, classes, args.topk)
        print(table.to_string(index=False))
        if args.csv:
            with atomic(args.csv) as tmp:
                table.to_csv(tmp, index=False)
    except PredictError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
