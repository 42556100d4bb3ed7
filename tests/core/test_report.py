import base64
import json
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from cifar10_fast.core.report import PLOTS

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def a_run(finished_sweep):
    _, group, _ = finished_sweep
    return group.parent / json.loads((group / "summary.json").read_text())["members"][0]


def test_report_embeds_every_plot_and_the_headline(finished_sweep):
    run_dir = a_run(finished_sweep)
    page = (run_dir / "report.html").read_text()
    sources = dict(re.findall(r"<img alt='([^']+)' src='([^']+)'>", page))
    assert sorted(sources) == sorted(name for name in PLOTS if (run_dir / name).is_file())
    assert len(sources) == len(PLOTS) - 1  # given LRs: no lr_find.png (test_train_fastai checks a run with it)
    for name, src in sources.items():
        assert base64.b64decode(src.removeprefix("data:image/png;base64,")) == (run_dir / name).read_bytes(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert f"{100 * summary['final_accuracy']:.2f}%" in page and f"{100 * summary['tta_accuracy']:.2f}%" in page
    assert run_dir.name in page and "lr_max" in page


def test_report_renders_offline_in_headless_chromium(finished_sweep, tmp_path):
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip("Chromium is not installed: apt-get install chromium chromium-driver (.ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    page = tmp_path / "alone" / "report.html"  # away from the run folder: nothing but the file itself
    page.parent.mkdir()
    shutil.copy(a_run(finished_sweep) / "report.html", page)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        browser.get(page.as_uri())
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth]);")
    finally:
        browser.quit()
    assert len(images) == len(PLOTS) - 1
    for alt, complete, width in images:
        assert complete and width > 0, alt


def test_the_headline_says_how_a_run_departs_from_the_recipe_in_words_not_python(finished_sweep):
    """A thin 2-epoch run must not look like the recipe: its headline names the flags it departs by,
    its LRs and data; what it did not reach says so, and no Python None or False shows anywhere."""
    page = (a_run(finished_sweep) / "report.html").read_text()
    headline = page.split("<h2>headline</h2>")[1].split("</table>")[0]
    assert "the recipe with --epochs 2 --bs 16" in headline and "--width 8" in headline
    assert "0.0001 -&gt; 0.001 (from flags)" in headline and "80 training and 20 test images of 10 classes" in headline
    assert "not reached" in headline and "images/s through the fit" in headline
    assert not re.search(r">(None|False|True|null)<", page)


def test_a_group_has_a_report_of_its_points_linking_its_members_reports(finished_sweep):
    """The group folder's report.html: its study, the table per point, each member's own report one
    click away, and compare.png embedded."""
    _, group, _ = finished_sweep
    page = (group / "report.html").read_text()
    summary = json.loads((group / "summary.json").read_text())
    links = re.findall(r"<a href='\.\./([^/']+)/report\.html'>", page)
    assert links == summary["members"] and all((group.parent / name / "report.html").is_file() for name in links)
    sources = dict(re.findall(r"<img alt='([^']+)' src='([^']+)'>", page))
    assert base64.b64decode(sources["compare.png"].removeprefix("data:image/png;base64,")) == \
        (group / "compare.png").read_bytes()
    for point in summary["points"]:
        assert f"<td>{point['point']}</td>" in page and f"<td>{point['final_accuracy_percent_mean']:.2f}</td>" in page
    assert "test set" in page and not re.search(r">(None|False|True|null|nan)<", page)
