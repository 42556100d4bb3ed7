"""The data set as plain tensors, for the rows that do not read it through fastai: the pixels
ours decodes (decoded_folder.py's cache), in ours' image order."""
import torch

from cifar10_fast.data.decoded_folder import decoded_folder


def data_tensors(folder, subset):
    """uint8 (N, 3, 32, 32) images and int64 labels of the train and test splits, and the class names."""
    data = decoded_folder(folder)
    train, test = data.rows(subset)  # unreadable training images skipped, as ours does
    return {"train": (data.nchw(train), torch.from_numpy(data.labels[train])),
            "test": (data.nchw(test), torch.from_numpy(data.labels[test])), "classes": data.classes}
