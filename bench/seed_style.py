"""seed-style: the recipe as the seed notebooks ran it, in plain PyTorch. A torchvision-style Dataset
over the same decoded images, albumentations on CPU DataLoader workers, fp32, torch's Adam with its
own defaults and L2 weight decay, OneCycleLR from ours' LRMIN to its LRMAX at epoch 5 and back."""
import time

import numpy as np
import torch
import torch.nn.functional as F
from fastai.vision.all import set_seed

from augment import albumentations_pipeline
from bench.measure import peak_memory, synchronize
from bench.tensors import data_tensors
from cifar10_fast.core.config import PEAK_FRACTION, RECIPE
from cifar10_fast.data.decoded_folder import channel_stats
from customresnet import CustomResNet


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


def notebook_optimizer(model, lr_min, lr_max, total_steps):
    """What the notebooks wrote: torch.optim.Adam at its defaults (betas 0.9/0.999, eps 1e-8) with L2
    weight decay on every parameter, added to the gradient as torch does, and OneCycleLR at its
    defaults but for the recipe's knots (beta1 cycles 0.95 -> 0.85 -> 0.95)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr_max, weight_decay=RECIPE.wd)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr_max, total_steps=total_steps,
                                                pct_start=PEAK_FRACTION, div_factor=lr_max / lr_min,
                                                final_div_factor=1.0)
    return opt, sched


def test_accuracy(model, loader, device):
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x.to(device)).argmax(1) == y.to(device)).sum()
    return correct.item() / len(loader.dataset)


def run(args, device, seed, work):
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
        opt, sched = notebook_optimizer(model, *args.lrs, args.epochs * len(train_dl))
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
