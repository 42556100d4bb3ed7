"""The data layer: CIFAR-10 from whatever the user has (a folder, an archive, the python version,
the download), listed, decoded and cached once, and served through one fastai DataBlock; the
GPU-resident loader. `loaders.cifar10_data` and `loaders.cifar10_dataloaders` are a run's way in."""
