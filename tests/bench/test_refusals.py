"""bench/refusals.py: every refusal and --help answers without loading torch (checked here, in
its own process, as a user runs it), and the bench times them (--smoke: the harness only; its
figures mean nothing and are asserted nowhere)."""
import json
import tempfile

import pytest

from bench import refusals
from tests.conftest import REPO


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    folder = tmp_path_factory.mktemp("refusals")
    refusals.make_scratch(folder)
    return folder


@pytest.mark.parametrize("command", refusals.COMMANDS, ids=refusals.as_typed)
def test_each_refusal_answers_in_one_line_without_importing_torch(command, scratch):
    answer = refusals.probe(command, scratch)
    assert not answer["imports_torch"], answer
    assert answer["status"] == refusals.expected_status(command), answer
    if answer["status"] == 2:
        line, = answer["stderr"]
        assert line.startswith("error: ")
    assert answer["ok"]


def test_smoke_writes_every_time_and_answer(tmp_path):
    out = tmp_path / "results"
    refusals.main(["--smoke", "--out", str(out)])
    results_file, = out.glob("refusals-smoke-*.json")
    results = json.loads(results_file.read_text())
    assert results["smoke"] is True and results["finished"] and results["all_ok"] is True
    assert results["device"] and results["versions"]["torch"] and results["repeats"] == 1
    for key in ("command", "cores", "load_average_before", "load_average_after", "git_commit"):
        assert key in results
    assert list(results["baselines"]) == list(refusals.BASELINES)
    assert [r["command"] for r in results["refusals"]] == [refusals.as_typed(c) for c in refusals.COMMANDS]
    for timed in [*results["baselines"].values(), *results["refusals"]]:
        assert len(timed["seconds"]) == 1 and timed["median"] == timed["min"] == timed["seconds"][0] > 0
    log = results_file.with_suffix(".log").read_text()
    assert "python -c 'import torch'" in log and "$SCRATCH" in log
    answers = json.dumps(results["refusals"])  # the scratch folder as $SCRATCH, the checkout as .
    assert str(REPO) not in answers and tempfile.gettempdir() not in answers


def test_smoke_needs_an_out_folder_and_repeats_are_bounded(capsys):
    for argv, text in ((["--smoke"], "--smoke needs --out DIR"), (["--repeats", "0"], "--repeats must be from 1")):
        with pytest.raises(SystemExit) as e:
            refusals.parse_args(argv)
        assert e.value.code == 2 and text in capsys.readouterr().err
