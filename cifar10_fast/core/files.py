"""Files written so that a crash never leaves half of one: under a temporary name in the same
folder, then renamed into place (a rename within a folder is atomic on POSIX file systems); and
new names that never take an existing one's place."""
import errno
import json
import os
import re
import shutil
import warnings
from contextlib import contextmanager
from functools import cache

from cifar10_fast.core.errors import BadInput, warn

MISSING_GLYPH = re.compile(r"Glyph (\d+) .*missing from font")  # matplotlib's warning, one per character
NOT_A_FALLBACK = "Last Resort"  # matplotlib's font of placeholder boxes: it "has" every character
shown_as_boxes = set()  # the characters a warning has named already in this process


# What torch's zip writer (torch.save) says when a write fails: "PytorchStreamWriter failed writing
# file ...", or a check of the bytes written in inline_container.cc; the errno is gone.
TORCH_WRITER = re.compile(r"PytorchStreamWriter|inline_container")


@cache
def new_file_mode():
    """The mode open() gives a new file: 0666 less the umask, which can only be read by setting it."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic(path):
    """A temporary name to write `path` under; renamed to `path` once written, with the mode a
    file that open() creates gets (safetensors writes its files 0600). A write that fails leaves
    nothing behind, and is an OSError that names `path` (see write_failure)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        if tmp.exists():  # fastai's export writes nothing in all but the main process
            os.chmod(tmp, new_file_mode())
            os.replace(tmp, path)
    except Exception as e:
        failure = write_failure(e, path, tmp)
        if failure is None or failure is e:
            raise
        raise failure from e
    finally:
        tmp.unlink(missing_ok=True)


def write_failure(error, path, tmp):
    """The OSError, naming `path`, of a write to `tmp` that failed with `error`; None where that was
    no failure of the machine."""
    if isinstance(error, OSError):
        if error.filename in (None, str(tmp)):  # a write names no file, an open the temporary one
            error.filename = str(path)
        return error
    if type(error).__name__ == "SafetensorError":  # safetensors holds the errno in its message only
        found = re.search(r"\(os error (\d+)\)", str(error))
        number = int(found[1]) if found else None
    elif isinstance(error, RuntimeError) and TORCH_WRITER.search(str(error)):  # torch.save (fastai's export) loses it
        number = errno.ENOSPC if drive_full(path) else errno.EIO
    else:
        return None
    return OSError(number, os.strerror(number), str(path)) if number else None


def drive_full(path, room=2**20):
    """Whether the drive of `path` has less than `room` bytes left for this user."""
    try:
        return shutil.disk_usage(path.parent).free < room
    except OSError:
        return False


def write_json(path, obj):
    with atomic(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def write_csv(path, table):
    with atomic(path) as tmp:
        table.to_csv(tmp, index=False)


def csv_text(value):
    """A CSV cell that a spreadsheet shows as the text it is: a text starting with = + - @ (or a tab
    or a carriage return) is a formula to Excel and LibreOffice, so it gets a leading quote."""
    return f"'{value}" if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def check_new_file(path, flag):
    """Refuse, before any work, the output file a flag names if it would overwrite something or
    has no folder to go into."""
    if path.is_dir():
        raise BadInput(f"{flag} {path} is a folder: give {flag} a file name")
    if os.path.lexists(path):  # a link that leads nowhere too: writing would replace the user's link
        as_link = " (as a link)" if path.is_symlink() else ""
        raise BadInput(f"{path} exists already{as_link}: give {flag} a new file name")
    if not path.parent.is_dir():
        raise BadInput(f"{path.parent} is not a folder: give {flag} a file in an existing folder, or create it first")
    if not os.access(path.parent, os.W_OK | os.X_OK):  # else refused at the end, after the work, by a temporary name
        raise BadInput(f"{path.parent} is not writable for you: give {flag} a file in a folder you can write to")


def figures_to_files():
    """matplotlib set up for figures that go to files: no window (Agg), and no warning per character
    that no font has. (Its own labels stay mathtext, as a log axis's 10^-7 must: user text goes
    through `figure_text`.)"""
    import matplotlib
    matplotlib.use("Agg")
    # A warning per character a font lacks, wherever text is laid out (fastai's tight_layout too):
    # save_figure says it once instead.
    warnings.filterwarnings("ignore", message=MISSING_GLYPH.pattern)


def figure_text(text):
    """A user's text (a class or run name) as a figure shows it, letter for letter: with every '$'
    escaped, matplotlib reads none of it as TeX, where an unknown command would fail the figure
    (after training, losing the run's outputs) and a known one would show as a formula."""
    return str(text).replace("$", r"\$")


def save_figure(fig, path):
    """A matplotlib figure as an image file (the format from the suffix), then closed. Characters
    that its fonts lack (class names in Chinese, say) are drawn with an installed font that has
    them, where there is one; else one warning line names them, once a process, in place of
    matplotlib's warning for each character."""
    import matplotlib.pyplot as plt  # here, so that predict.py, which only needs atomic(), never loads it
    with atomic(path) as tmp:
        missing = draw_noting_missing_glyphs(fig, tmp, path.suffix[1:])
        if missing and add_fallback_font(fig, missing):
            missing = draw_noting_missing_glyphs(fig, tmp, path.suffix[1:])
    plt.close(fig)
    if missing - shown_as_boxes:
        characters = f"{len(missing)} character{'s' if len(missing) > 1 else ''}"
        warn(f"the figures draw {characters} of their labels as boxes ({''.join(sorted(missing))[:20]}): no installed "
             "font has them; install one that does (Noto Sans CJK for Chinese, Japanese or Korean) for readable "
             "figures")
        shown_as_boxes.update(missing)


def draw_noting_missing_glyphs(fig, file, file_format):
    """Save `fig`; returns the characters no font of it has. matplotlib's other warnings pass."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.filterwarnings("always", message=MISSING_GLYPH.pattern)  # drawing meets every character
        fig.savefig(file, format=file_format, dpi=120, bbox_inches="tight")
    missing = set()
    for warning in caught:
        glyph = MISSING_GLYPH.match(str(warning.message))
        if glyph:
            missing.add(chr(int(glyph[1])))
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return missing


def add_fallback_font(fig, missing):
    """Add the installed font that has the most of the `missing` characters after the fonts of
    every text of `fig`, and of the figures to come; False where no font has any of them."""
    import matplotlib
    from matplotlib.text import Text
    covered, family = max(((len(missing & charmap), family) for family, charmap in installed_charmaps()),
                          default=(0, None))
    if not covered:
        return False
    matplotlib.rcParams["font.family"] = [*matplotlib.rcParams["font.family"], family]
    for text in fig.findobj(Text):
        text.set_fontfamily([*text.get_fontfamily(), family])
    return True


@cache
def installed_charmaps():
    """(family, the characters it has) of each font matplotlib knows: read once a process, and
    only where a figure lacks a character."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font
    charmaps = []
    for entry in font_manager.fontManager.ttflist:
        if entry.name.startswith(NOT_A_FALLBACK):
            continue
        try:
            charmaps.append((entry.name, frozenset(map(chr, FT2Font(entry.fname).get_charmap()))))
        except (OSError, RuntimeError):  # a font file it cannot read
            continue
    return charmaps


def unused_names(stem, attempts=999):
    """`stem`, then `stem-2`, `stem-3`, ...: the names to try, in order, for something new."""
    yield stem
    for attempt in range(2, attempts + 1):
        yield f"{stem}-{attempt}"
