"""Every kind of bad input a user can hand us, in one table (test_table.py): what the tool refuses
(a one-line `error:` naming the problem and the fix, exit 2, no traceback) and what it repairs with
a warning; and the failures no check before a run can foresee (test_failures.py).

A row is (tool, make, outcome, expected text, check): `make(tmp, data, run)` builds the input and
returns the command line; tools "train", "predict" and "compare" run the CLIs, "data" builds the
DataLoaders. A repair's check looks at what was made: the DataLoaders, or a finished training run's
folder. The makers are in makers_data.py (the data a run reads) and makers_tools.py (flags, run
folders, and what predict and compare are given)."""
