"""fastai-stock: fastai's own per-item path, none of ours' GPU work. The DataBlock of data.py
reading the image files, albumentations per item on CPU DataLoader workers, fp32, fastai's Adam
and fit_one_cycle with ours' LRs."""
import tempfile
import time
from pathlib import Path

from fastai.vision.all import Adam, CrossEntropyLossFlat, Learner, accuracy, set_seed

from augment import training_augmentations
from bench.measure import peak_memory, synchronize
from cifar10_fast.core.config import PEAK_FRACTION, RECIPE
from cifar10_fast.data.loaders import cifar10_dataloaders
from cifar10_fast.training.lr_schedule import one_cycle
from customresnet import CustomResNet


def run(args, device, seed, work):
    result = {"seed": seed}
    with peak_memory(device, result):
        start = time.perf_counter()
        set_seed(seed)
        dls, _ = cifar10_dataloaders(args.folder, bs=args.bs, device=device, subset=args.subset, workers=args.workers,
                                     seed=seed, on_device=False,
                                     augmentations=training_augmentations("albumentations", seed))
        learn = Learner(dls, CustomResNet(len(dls.vocab), args.width), loss_func=CrossEntropyLossFlat(),
                        opt_func=Adam, metrics=accuracy, wd=RECIPE.wd,
                        path=Path(tempfile.mkdtemp(dir=work, prefix="fastai-stock-")))
        schedule = one_cycle(*args.lrs, args.epochs * PEAK_FRACTION, args.epochs)
        fit_start = time.perf_counter()  # fastai's fit alone: none of ours' checkpoints or outputs
        learn.fit_one_cycle(**schedule)
        synchronize(device)
        result["fit_s"] = time.perf_counter() - fit_start
        result["total_s"] = time.perf_counter() - start
    result.update(accuracy=float(learn.recorder.values[-1][2]),
                  images_per_s=args.epochs * len(dls.train) * args.bs / result["fit_s"])
    return result
