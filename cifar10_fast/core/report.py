"""One page per run: report.html with the config, the headline numbers and every plot the run
wrote, embedded as data URIs, so the file is whole on its own and opens offline in any browser.
train_fastai.py writes it last in every training run."""
import base64
import html
import json
from pathlib import Path

from cifar10_fast.core.files import atomic
from cifar10_fast.core.run_folder import (
    CONFUSION_MATRIX_PNG,
    CURVES_PNG,
    LR_FIND_PNG,
    LR_SCHEDULE_PNG,
    MISCLASSIFIED_PNG,
    REPORT,
    read_config,
    read_summary,
)

PLOTS = {LR_FIND_PNG: "LR range test", LR_SCHEDULE_PNG: "LR and momentum schedule",
         CURVES_PNG: "loss and test accuracy per epoch", CONFUSION_MATRIX_PNG: "confusion matrix (test set)",
         MISCLASSIFIED_PNG: "the test images with the highest loss"}
HEADLINE = {"final_accuracy": "final test accuracy (the headline)", "tta_accuracy": "with flip TTA",
            "best_accuracy": "best epoch (for information only)", "epochs": "epochs trained",
            "stopped_early": "stopped at --target-acc", "fit_seconds": "fit seconds",
            "train_images_per_s": "training images/s", "parameters": "parameters", "device": "device",
            "git_commit": "git commit"}
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


def render(run_dir):
    config, summary = read_config(run_dir), read_summary(run_dir)
    numbers = {label: summary[key] for key, label in HEADLINE.items() if key in summary}
    for key in ("final_accuracy", "tta_accuracy", "best_accuracy"):
        if key in summary:
            numbers[HEADLINE[key]] = f"{100 * summary[key]:.2f}%"
    numbers.update({key.replace("_", " "): value for key, value in summary.items()
                    if key.startswith(("first_epoch_", "seconds_to_"))})
    plots = "".join(f"<h3>{html.escape(title)}</h3><img alt='{name}' src='{data_uri(run_dir / name)}'>"
                    for name, title in PLOTS.items() if (run_dir / name).is_file())
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(run_dir.name)}</title>"
            f"<style>{STYLE}</style></head><body><h1>run {html.escape(run_dir.name)}</h1>"
            f"<h2>headline</h2>{key_value_table(numbers)}<h2>plots</h2>{plots}"
            f"<h2>config</h2>{key_value_table(config)}</body></html>\n")


def write_report(run_dir):
    run_dir = Path(run_dir)
    with atomic(run_dir / REPORT) as tmp:
        tmp.write_text(render(run_dir))
    return run_dir / REPORT

