"""One page per run: report.html with the config, the headline numbers and every plot the run
wrote, embedded as data URIs, so the file is whole on its own and opens offline in any browser.
train_fastai.py writes it last in every training run, and one for every group in its folder: its
summary, its points, its members' pages and its figures (for a search, Optuna's)."""
import base64
import html
import json
from pathlib import Path

from cifar10_fast.core.config import departures
from cifar10_fast.core.files import atomic
from cifar10_fast.core.run_folder import (
    COMPARE_PNG,
    CONFUSION_MATRIX_PNG,
    CURVES_PNG,
    LR_FIND_JSON,
    LR_FIND_PNG,
    LR_SCHEDULE_PNG,
    MISCLASSIFIED_PNG,
    REPORT,
    SEARCH_HISTORY_PNG,
    SEARCH_IMPORTANCE_PNG,
    read_config,
    read_summary,
)

PLOTS = {LR_FIND_PNG: "LR range test", LR_SCHEDULE_PNG: "LR and momentum schedule",
         CURVES_PNG: "loss and test accuracy per epoch", CONFUSION_MATRIX_PNG: "confusion matrix (test set)",
         MISCLASSIFIED_PNG: "the test images with the highest loss"}
GROUP_PLOTS = {COMPARE_PNG: "final accuracy of every member", SEARCH_HISTORY_PNG: "the search's trials as they came",
               SEARCH_IMPORTANCE_PNG: "how much each searched setting mattered"}
MILESTONES = (90, 93, 94)  # test accuracy (%) whose first epoch and seconds a summary records
STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}"
         "img{max-width:100%;display:block;margin:0.5em 0 2em}")


def data_uri(png):
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def shown(value):
    """A value as a reader reads it: numbers and text as they are, lists as JSON, yes and no, and a
    dash for what a run did not reach or was not given."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else str(value)


def key_value_table(values):
    rows = "".join(f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(shown(value))}</td></tr>"
                   for key, value in values.items())
    return f"<table>{rows}</table>"


def percent(fraction):
    return None if fraction is None else f"{100 * fraction:.2f}%"


def images_line(config):
    """How many images a run trained and was tested on: a search's trial is tested on training images
    held out of its training, and says so wherever it says what it was tested on."""
    return (f"{config.get('train_images')} training and {config.get('test_images')} {tested_on(config)} images of "
            f"{len(config.get('classes') or [])} classes")


def tested_on(config):
    return "held-out" if config.get("holdout") else "test"


def headline(config, summary):
    """What a reader asks of a run first: what it ran (the recipe, or how it departs from it; the
    LRs; the data), how well (the final epoch's test accuracy, never the best), how fast, and where."""
    changed = departures(config)
    lrs = f"{config['lr_min']:.3g} -> {config['lr_max']:.3g}" if config.get("lr_max") else None
    lrs_from = "the LR range test" if config.get("lr_source") == LR_FIND_JSON else config.get("lr_source")
    epochs = f"{summary.get('epochs')}" + (f", stopped at --target-acc {summary.get('target_acc')}"
                                           if summary.get("stopped_early") else "")
    rows = {"settings": f"the recipe with {' '.join(changed)}" if changed else "the recipe",
            "LRMIN -> LRMAX": lrs and f"{lrs} (from {lrs_from})",
            "data": images_line(config),
            f"final {tested_on(config)} accuracy (the headline)": percent(summary.get("final_accuracy")),
            "with flip TTA": percent(summary.get("tta_accuracy")),
            "best epoch (for information only)": percent(summary.get("best_accuracy")),
            "epochs trained": epochs, "fit seconds": summary.get("fit_seconds"),
            "images/s through the fit (its training and test passes)": summary.get("fit_images_per_s")}
    for milestone in MILESTONES:
        epoch, seconds = summary.get(f"first_epoch_{milestone}"), summary.get(f"seconds_to_{milestone}")
        rows[f"first reached {milestone}%"] = f"epoch {epoch}, after {seconds} s" if epoch else "not reached"
    rows.update({"parameters": summary.get("parameters"), "device": summary.get("device"),
                 "git commit": summary.get("git_commit")})
    return {label: value for label, value in rows.items() if value is not None}


def rows_table(rows):
    """Rows of a group's points (dicts of the same keys) as a table: the accuracies (%) and seconds
    to two decimals."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cell = lambda value: f"{value:.2f}" if isinstance(value, float) else shown(value)  # noqa: E731
    head = "".join(f"<th>{html.escape(column)}</th>" for column in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell(row.get(column)))}</td>" for column in columns) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def plots_html(folder, plots):
    return "".join(f"<h3>{html.escape(title)}</h3><img alt='{name}' src='{data_uri(folder / name)}'>"
                   for name, title in plots.items() if (folder / name).is_file())


def page(title, body):
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n")


def render(run_dir):
    config, summary = read_config(run_dir), read_summary(run_dir)
    return page(f"run {run_dir.name}", f"<h2>headline</h2>{key_value_table(headline(config, summary))}"
                                       f"<h2>plots</h2>{plots_html(run_dir, PLOTS)}"
                                       f"<h2>config</h2>{key_value_table(config)}")


def members_list(summary):
    """Each member run's name, linked to its own report beside the group folder."""
    items = "".join(f"<li><a href='../{html.escape(name, quote=True)}/{REPORT}'>{html.escape(name)}</a></li>"
                    for name in summary.get("members", []))
    return f"<ul>{items}</ul>"


def group_section(summary):
    """A group's (or a search's final runs') figures: which study, its trials by state, what its
    accuracies were tested on, and its points or, for a search, the best point of its trials."""
    facts = {key: summary.get(key) for key in ("study", "storage", "trials", "tested_on", "holdout", "sweep",
                                               "search", "best", "runs")}
    points = f"<h3>per point, over its seeds</h3>{rows_table(summary['points'])}" if summary.get("points") else ""
    return (f"{key_value_table({k: v for k, v in facts.items() if v is not None})}{points}"
            f"<h3>members</h3>{members_list(summary)}")


def render_group(group_dir):
    summary = read_summary(group_dir)
    final = (f"<h2>the best point's final runs (tested on the test set, once)</h2>{group_section(summary['final'])}"
             if summary.get("final") else "")
    return page(f"group {group_dir.name}", f"<h2>{'search' if summary.get('search') else 'group'}</h2>"
                                           f"{group_section(summary)}{final}"
                                           f"<h2>plots</h2>{plots_html(group_dir, GROUP_PLOTS)}")


def write_report(run_dir, render=render):
    run_dir = Path(run_dir)
    with atomic(run_dir / REPORT) as tmp:
        tmp.write_text(render(run_dir))
    return run_dir / REPORT

