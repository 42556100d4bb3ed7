"""The data set as plain tensors, for the rows that do not read it through fastai: the pixels
ours decodes (data.py's cache), in ours' image order."""
import torch

from data import class_names, cifar10_items, decoded_images, in_test_folder


def data_tensors(folder, subset):
    """uint8 (N, 3, 32, 32) images and int64 labels of the train and test splits, and the class names."""
    classes = class_names(folder)
    items = cifar10_items(folder, subset)
    images, readable = decoded_images(folder, items)  # unreadable training images are skipped, as ours does
    items, images = [p for p, ok in zip(items, readable) if ok], images[torch.from_numpy(readable)]
    labels = torch.tensor([classes.index(p.parent.name) for p in items])
    test = torch.tensor([in_test_folder(p) for p in items])
    return {"train": (images[~test], labels[~test]), "test": (images[test], labels[test]), "classes": classes}
