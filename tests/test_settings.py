"""The settings of a run: presets, and flags checked before torch and fastai load."""
import json
import subprocess
import sys

import pytest

from conftest import REPO
from settings import PRESETS, member, parse_args


def test_presets_fill_the_flags_left_unset_and_given_flags_win():
    seed = parse_args([])
    assert seed.preset == "seed" and (seed.epochs, seed.bs, seed.wd, seed.label_smoothing, seed.tta) == (24, 512, 0.01,
                                                                                                       0.0, False)
    fast = parse_args(["--preset", "fast"])
    assert {name: getattr(fast, name) for name in PRESETS["fast"]} == PRESETS["fast"]
    assert fast.epochs < 24 and fast.label_smoothing > 0 and fast.tta
    given = parse_args(["--preset", "fast", "--epochs", "12", "--no-tta", "--label-smoothing", "0"])
    assert (given.epochs, given.tta, given.label_smoothing, given.bs) == (12, False, 0.0, PRESETS["fast"]["bs"])


def run_script(*args):
    return subprocess.run([sys.executable, str(REPO / "train_fastai.py"), *args], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("flags", [["--epochs", "ten"], ["--bogus"], ["--lr-max", "-1"], ["--sweep", "colour=red"]])
def test_a_bad_flag_is_one_line_from_the_shell_before_torch_loads(flags):
    done = run_script(*flags)
    assert done.returncode == 2
    line, = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and line.endswith("(see --help)")


def test_help_and_flag_errors_never_import_torch_or_fastai():
    """What makes them answer in well under a second (torch and fastai take seconds to import)."""
    probe = ("import sys, settings\n"
             "try:\n    settings.parse_args(['--bogus'])\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in ('torch', 'fastai', 'numpy', 'pandas') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
    assert done.stdout.strip() == "[]", done.stderr
    assert "--find-lr" in run_script("--help").stdout


def test_a_tilde_in_out_or_resume_means_home_as_in_data(monkeypatch, tmp_path, capsys):
    """`--out=~/runs` reaches us unexpanded (the shell expands ~ only at a word's start): it must
    not become a folder named ~ in the current folder."""
    monkeypatch.setenv("HOME", str(tmp_path))
    assert parse_args(["--out=~/runs"]).out == str(tmp_path / "runs")
    with pytest.raises(SystemExit):
        parse_args(["--resume=~/runs/a-run"])
    assert f"{tmp_path / 'runs' / 'a-run'} holds no checkpoint.json" in capsys.readouterr().err


def test_predict_and_compare_read_a_tilde_as_home(monkeypatch, tmp_path, capsys):
    import compare
    import predict
    monkeypatch.setenv("HOME", str(tmp_path))
    for cli, argv in ((predict.main, ["x.png", "--run=~/nope"]), (compare.main, ["--out=~/nope"])):
        with pytest.raises(SystemExit):
            cli(argv)
        assert str(tmp_path / "nope") in capsys.readouterr().err


def test_a_resumed_run_takes_back_its_name_and_its_place_in_a_group(tmp_path):
    run_dir = tmp_path / "runs" / "20260101-000000-lr-lr_max=0.004-seed1"
    run_dir.mkdir(parents=True)
    config = {"epochs": 2, "bs": 16, "width": 8, "seed": 1, "lr_max": 0.004, "name": "lr-lr_max=0.004-seed1",
              "tta": True, "target_acc": 0.9, "group": "20260101-000000-lr-group", "sweep_point": "lr_max=0.004"}
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "checkpoint.json").write_text(json.dumps({"epochs_done": 1, "history": [["0"]], "lrs": [1e-4],
                                                         "moms": [0.95], "fit_seconds": 1.0}))
    args = parse_args(["--resume", str(run_dir)])
    resumed = member(args, args.points[0])
    for key in ("name", "tta", "target_acc", "group", "sweep_point", "seed", "lr_max"):
        assert getattr(resumed, key) == config[key], key
