"""The GPU-resident loader: the epoch order drawn on the device, the ragged batch, several processes,
the test set's batch size."""
import random

import pytest
import torch
from fastai.data.load import DataLoader
from fastai.distributed import DistributedDL

from cifar10_fast.data.device_loader import DeviceDataLoader, valid_batch_size


def numbered_loader(n, bs, seed=0, shuffle=True):
    """A DeviceDataLoader over n images whose pixels and labels are their own index."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 2, 2).contiguous()
    return DeviceDataLoader(list(range(n)), images=images, labels=torch.arange(n), bs=bs, shuffle=shuffle,
                            drop_last=shuffle, seed=seed, device="cpu")


def epoch(dl):
    """The image indices of one epoch, batch by batch, checking each image against its label."""
    batches = []
    for x, y in dl:
        assert x[:, 0, 0, 0].tolist() == y.tolist()
        batches.append(y.tolist())
    return batches


def test_the_training_order_is_drawn_on_the_device_every_image_once_an_epoch(monkeypatch):
    monkeypatch.setattr(DataLoader, "shuffle_fn", lambda *a: pytest.fail("a Python shuffle"))
    order = numbered_loader(100, bs=10).get_idxs()
    assert torch.is_tensor(order) and order.device == torch.device("cpu")  # where the images are
    dl = numbered_loader(100, bs=10)
    first, second = epoch(dl), epoch(dl)
    for batches in (first, second):
        assert [len(b) for b in batches] == [10] * 10
        assert sorted(sum(batches, [])) == list(range(100))
    assert first != second
    assert epoch(numbered_loader(100, bs=10)) == first  # the same seed, the same order
    assert epoch(numbered_loader(100, bs=10, seed=1)) != first


def test_training_drops_the_ragged_last_batch_and_validation_keeps_its_order():
    assert [len(b) for b in epoch(numbered_loader(25, bs=10))] == [10, 10]
    assert epoch(numbered_loader(25, bs=10, shuffle=False)) == [list(range(10)), list(range(10, 20)),
                                                                list(range(20, 25))]


def test_the_test_order_is_a_range_on_the_host_that_get_preds_reorders_by():
    """fastai's get_preds gathers the predictions on the host and reorders them by get_idxs()'s
    order: an order on the GPU would index host tensors with a device index, which CUDA refuses."""
    dl = numbered_loader(25, bs=10, shuffle=False)
    assert dl.get_idxs() == range(25)
    x, _ = next(iter(dl))
    assert x.untyped_storage().data_ptr() == dl.images.untyped_storage().data_ptr()  # a slice: a view


@pytest.mark.parametrize("shuffle", [True, False], ids=["train", "valid"])
def test_fastai_distributed_loader_shares_out_every_image_once(monkeypatch, shuffle):
    """Under two processes fastai's DistributedDL sends rank 0's order, a list of Python ints, to
    every process and hands each its half to create_batches."""
    def broadcast(self, idxs, rank):  # no process group here: every rank drew the same order
        assert all(type(i) is int for i in idxs)
        return idxs

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(DistributedDL, "_broadcast", broadcast)
    ranks = []
    for rank in range(2):
        random.seed(0)  # fastai's order: the same in every process, as set_seed makes it
        ranks.append(sum(epoch(DistributedDL(numbered_loader(40, bs=5, shuffle=shuffle), rank, 2)), []))
    assert len(ranks[0]) == len(ranks[1]) == 20
    assert sorted(ranks[0] + ranks[1]) == list(range(40))


@pytest.mark.parametrize("n_images,bs,valid_bs",
                         [(10_000, 512, 1000), (10_000, 50, 100), (20, 8, 10), (9_973, 512, 512)],
                         ids=["cifar10", "small bs", "tiny", "prime: bs"])
def test_the_test_batch_is_the_largest_divisor_of_the_test_set_up_to_twice_bs(n_images, bs, valid_bs):
    assert valid_batch_size(n_images, bs) == valid_bs
