"""cifar10-fast: the DAWNBench ResNet recipe on CIFAR-10, through fastai.

The recipe and its entry points sit at the top of the checkout (train_fastai.py, customresnet.py,
augment.py, predict.py, compare.py); this package holds what they stand on, in three layers whose
imports only go down:

    core       torch-free: the settings, errors, files, the run folder, a run's life, the report
    data       CIFAR-10 found, unpacked, decoded, cached; the DataBlock and the GPU-resident loader
    training   the fit and its callbacks, the LR range test and schedule, the optimizer, what the
               loop records, several processes, the machine, what a run writes
"""
