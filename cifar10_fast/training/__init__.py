"""The training layer: the fit and the checkpoints it resumes from, the callbacks, the LR range
test and the one-cycle schedule, the optimizer, what the loop records, several processes, the
machine, and what a run writes."""
