"""Files written so that a crash never leaves half of one: under a temporary name in the same
folder, then renamed into place (a rename within a folder is atomic on POSIX file systems); and
new names that never take an existing one's place."""
import json
import os
from contextlib import contextmanager


@contextmanager
def atomic(path):
    """A temporary name to write `path` under; renamed to `path` once written."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        if tmp.exists():  # fastai's export writes nothing in all but the main process
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path, obj):
    with atomic(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def write_csv(path, table):
    with atomic(path) as tmp:
        table.to_csv(tmp, index=False)


def save_figure(fig, path):
    """A matplotlib figure as an image file (the format from the suffix), then closed."""
    import matplotlib.pyplot as plt  # here, so that predict.py, which only needs atomic(), never loads it
    with atomic(path) as tmp:
        fig.savefig(tmp, format=path.suffix[1:], dpi=120, bbox_inches="tight")
    plt.close(fig)


def unused_names(stem, attempts=999):
    """`stem`, then `stem-2`, `stem-3`, ...: the names to try, in order, for something new."""
    yield stem
    for attempt in range(2, attempts + 1):
        yield f"{stem}-{attempt}"
