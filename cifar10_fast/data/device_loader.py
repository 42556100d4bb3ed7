"""The GPU-resident data path: a fastai DataLoader that serves batches from uint8 images held in
device memory, and the test set's batch size."""
import torch
from fastai.data.core import TfmdDL
from fastai.torch_core import TensorCategory, TensorImage, num_distrib

from cifar10_fast.core.internals import dataloader_order


class DeviceDataLoader(TfmdDL):
    """A fastai DataLoader that serves batches straight from uint8 images held in device memory.

    fastai's DataLoader builds every batch in Python one item at a time; CIFAR-10 is 180 MB as
    uint8, so it fits on any GPU, and a batch is then one index into a tensor. The epoch's order
    is drawn on the device too (a new permutation every epoch, from a generator seeded from
    `seed`; in order without shuffling), so an epoch costs the host no list of Python ints and no
    copy to the device. The batch transforms (to float, Normalize, the GPU augmentations) still
    run as in any fastai loader. Without `images` (an exported learner's empty loaders, `test_dl`
    on new files) it falls back to fastai's per-item path.
    """

    def __init__(self, dataset=None, images=None, labels=None, seed=None, **kwargs):
        super().__init__(dataset, **{**kwargs, "num_workers": 0})  # the data never leaves the device
        self.images, self.labels, self.seed = images, labels, seed
        if images is not None:
            self.to(self.device)

    def to(self, device):
        super().to(device)
        if self.images is not None:
            if device is not None:
                self.images, self.labels = self.images.to(device), self.labels.to(device)
            self.generator = epoch_order_generator(self.seed, self.images.device)

    def new(self, dataset=None, cls=None, **kwargs):
        kwargs = {"seed": self.seed, **kwargs}
        if dataset is None or dataset is self.dataset:
            kwargs = {"images": self.images, "labels": self.labels, **kwargs}
        return super().new(dataset, cls, **kwargs)

    def get_idxs(self):
        # Under several processes fastai's DistributedDL takes this loader's order as a list of
        # Python ints (it sends rank 0's to every process and hands each its share to
        # create_batches): fastai's own order, then.
        if self.images is None or num_distrib() > 1:
            return super().get_idxs()
        if not self.shuffle:
            # In order, a range: each batch is a slice of the images, a view, with no index to
            # gather by. It stays on the host, as fastai's own order does: get_preds reorders the
            # predictions it has gathered on the host by it, which an order on the device cannot.
            return range(len(self.images))
        return torch.randperm(len(self.images), generator=self.generator, device=self.images.device)

    def sample(self):
        # fastai's sample() hands on get_idxs' order (which its __iter__ keeps in a private
        # attribute) one Python int at a time; an order on the device, or a range, goes on whole.
        order = dataloader_order(self)
        return order if torch.is_tensor(order) or isinstance(order, range) else super().sample()

    def create_batches(self, samps):
        if self.images is None:
            yield from super().create_batches(samps)
            return
        # Under several processes the order comes as Python ints (see get_idxs): one copy an epoch.
        order = samps if torch.is_tensor(samps) or isinstance(samps, range) else \
            torch.tensor(list(samps), device=self.images.device)
        for start in range(0, len(order), self.bs):
            idxs = order[start:start + self.bs]
            if self.drop_last and len(idxs) < self.bs:
                break
            if isinstance(idxs, range):
                idxs = slice(idxs.start, idxs.stop)
            yield TensorImage(self.images[idxs]), TensorCategory(self.labels[idxs])


def epoch_order_generator(seed, device):
    """The generator that draws the epoch order on `device`, seeded from `seed` (None: from the
    seed of torch's default generator, which fastai's set_seed sets). It gets a seed of its own,
    drawn from `seed`: seeded with `seed` itself it would repeat, bit for bit, the stream of the
    default generator that set_seed seeds with the same number and the augmentations draw from."""
    seed = torch.initial_seed() if seed is None else seed
    own_seed = torch.randint(2**62, (), generator=torch.Generator().manual_seed(seed)).item()
    return torch.Generator(device=device).manual_seed(own_seed)


def valid_batch_size(n_images, bs):
    """The test set's batch size: the largest divisor of its size not above 2 * bs (1,000 for
    CIFAR-10's 10,000 test images and bs 512), so that every test batch has one shape and no
    ragged last batch sets off another cuDNN autotune or torch.compile recompile. A test set
    whose size has no divisor from bs to 2 * bs (a prime, say) is served in batches of bs, the
    last one ragged, rather than in batches much smaller than training's."""
    divisor = max(d for d in range(1, min(n_images, 2 * bs) + 1) if n_images % d == 0)
    return divisor if divisor >= bs else bs
