"""The experiments layer: a group of runs (seeds of every point of a --sweep grid, or a --search) as
one Optuna study, its trials trained by worker processes, one per GPU, on one machine or several;
its summary and figures. It trains each run through the function train_fastai.py hands it."""
