"""The torch-free layer: what the tools answer before torch loads (settings, bad input, files, the
run folder, a run's life, the report). Nothing here imports torch or fastai."""
