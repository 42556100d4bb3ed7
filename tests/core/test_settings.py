"""The settings of a run: presets, and flags checked before torch and fastai load."""
import json
import subprocess
import sys

import pytest

from cifar10_fast.core import settings
from cifar10_fast.core.config import PRESETS, RECIPE, lr_source, member
from cifar10_fast.core.settings import parse_args
from tests.conftest import REPO


def test_presets_fill_the_flags_left_unset_and_given_flags_win():
    seed = parse_args([])
    assert seed.preset == "seed" and (seed.epochs, seed.bs, seed.wd, seed.label_smoothing, seed.tta) == (24, 512, 0.01,
                                                                                                       0.0, False)
    fast = parse_args(["--preset", "fast"])
    assert {name: getattr(fast, name) for name in PRESETS["fast"]} == PRESETS["fast"]
    assert fast.epochs < 24 and fast.label_smoothing > 0 and fast.tta
    given = parse_args(["--preset", "fast", "--epochs", "12", "--no-tta", "--label-smoothing", "0"])
    assert (given.epochs, given.tta, given.label_smoothing, given.bs) == (12, False, 0.0, RECIPE.bs)


def run_script(*args):
    return subprocess.run([sys.executable, str(REPO / "train_fastai.py"), *args], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("flags", [["--epochs", "ten"], ["--bogus"], ["--lr-max", "-1"], ["--sweep", "colour=red"]])
def test_a_bad_flag_is_one_line_from_the_shell_before_torch_loads(flags):
    done = run_script(*flags)
    assert done.returncode == 2
    line, = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and line.endswith("(see --help)")


def test_an_out_that_is_a_file_or_lies_under_one_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "afile").write_text("a file")
    for out, says in ((tmp_path / "afile", f"--out {tmp_path / 'afile'} is not a folder"),
                      (tmp_path / "afile" / "runs", f"lies under {tmp_path / 'afile'}, which is not a folder")):
        with pytest.raises(SystemExit):
            parse_args(["--out", str(out)])
        assert says in capsys.readouterr().err
    assert parse_args(["--out", str(tmp_path / "new" / "runs")]).out == str(tmp_path / "new" / "runs")


def test_a_cache_folder_that_is_a_file_or_lies_under_one_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    (tmp_path / "afile").write_text("a file")
    for cache in (tmp_path / "afile", tmp_path / "afile" / "cache"):
        monkeypatch.setenv("CIFAR10_CACHE", str(cache))
        with pytest.raises(SystemExit):
            parse_args([])
        assert f"CIFAR10_CACHE={cache}: {tmp_path / 'afile'} is not a folder" in capsys.readouterr().err


def test_help_and_flag_errors_never_import_torch_or_fastai():
    """What makes them answer in well under a second (torch and fastai take seconds to import)."""
    probe = ("import sys\nfrom cifar10_fast.core import settings\n"
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
    resumed = member(parse_args(["--resume", str(run_dir)]), {})
    for key in ("name", "tta", "target_acc", "group", "sweep_point", "seed", "lr_max"):
        assert getattr(resumed, key) == config[key], key


# Issue 17, class 3: what is refused before torch loads -------------------------------------

def refusal(argv, capsys, **parse_options):
    with pytest.raises(SystemExit) as e:
        parse_args(argv, **parse_options)
    assert e.value.code == 2
    return capsys.readouterr().err.strip()


def test_a_gpu_on_a_machine_without_one_is_refused_with_the_flags(monkeypatch, capsys):
    monkeypatch.setattr(settings, "no_cuda_here", lambda: True)
    assert refusal(["--device", "cuda:1"], capsys) == ("error: --device cuda:1: no CUDA GPU is visible here; use "
                                                       "--device cpu (see --help)")
    assert "--precision bf16 needs a CUDA GPU (fastai's mixed precision), and no CUDA GPU is visible here" in refusal(
        ["--precision", "bf16"], capsys)
    monkeypatch.setattr(settings, "no_cuda_here", lambda: False)  # maybe a GPU: torch decides, in the run
    assert parse_args(["--device", "cuda:1", "--precision", "bf16"]).device == "cuda:1"


def test_no_gpu_is_known_without_torch_where_none_is_visible(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert settings.no_cuda_here()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    import torch
    if settings.no_cuda_here():  # never a GPU that torch sees on a machine said to have none
        assert not torch.cuda.is_available()


def test_data_that_is_not_there_is_refused_with_the_flags(monkeypatch, tmp_path, capsys):
    assert refusal(["--data", str(tmp_path / "nope")], capsys).startswith(
        f"error: --data {tmp_path / 'nope'}: {tmp_path / 'nope'} does not exist: give a CIFAR-10 folder or .tgz")
    monkeypatch.setenv("CIFAR10_DATA", "~/nope")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert refusal([], capsys).startswith(f"error: CIFAR10_DATA=~/nope: {tmp_path / 'nope'} does not exist")
    assert parse_args([], reads_data=False).data is None  # a bench that brings its own data


# Issue 17, class 4: what is recorded is what happened ---------------------------------------

def test_the_fast_presets_tta_goes_with_find_lr_and_a_given_one_does_not(capsys):
    assert parse_args(["--preset", "fast", "--find-lr"]).tta  # the preset's, unused by the finder
    assert "drop --tta" in refusal(["--preset", "fast", "--find-lr", "--tta"], capsys)
    assert parse_args(["--find-lr", "--no-tta"]).find_lr


def test_each_lr_records_its_own_source():
    assert lr_source(None, None) == "lr_find.json"
    assert lr_source(1e-4, 1e-3) == "flags"
    assert lr_source(None, 1e-3) == "lr_min: lr_find.json, lr_max: flags"
    assert lr_source(1e-4, None) == "lr_min: flags, lr_max: lr_find.json"


def test_a_weight_decay_is_checked_against_each_swept_lr_max(capsys):
    assert parse_args(["--wd", "50", "--lr-max", "1e-2"]).wd == 50  # 1 - 0.5 a step: strong, but a decay
    assert "--lr-max 0.02 with --wd 50" in refusal(["--wd", "50", "--sweep", "lr_max=1e-2,2e-2"], capsys)


# Issue 24, class 4: every path given means what it says ------------------------------------

@pytest.mark.parametrize("flag,what", [("--resume", "the folder of an interrupted run"),
                                       ("--out", "the folder for run folders"),
                                       ("--data", "a CIFAR-10 folder or .tgz")])
def test_an_empty_path_is_refused_not_taken_for_the_current_folder_or_a_default(flag, what, capsys):
    """`--resume "$RUN"` with RUN unset started a new run; `--out ''` wrote into the current folder."""
    assert refusal([flag, ""], capsys) == f"error: {flag} is empty (an unset shell variable?): give {what} (see --help)"


def test_an_empty_home_is_refused_where_the_cache_would_go_to_the_root(monkeypatch, capsys):
    monkeypatch.setenv("HOME", "")
    monkeypatch.delenv("CIFAR10_CACHE")
    assert "HOME is set but empty, and CIFAR10_CACHE is not set" in refusal([], capsys)
    from cifar10_fast.core.errors import DataError
    from cifar10_fast.data.cache import cache_root
    with pytest.raises(DataError, match="would go to /.cache"):
        cache_root()
    monkeypatch.setenv("CIFAR10_CACHE", "/somewhere/cache")
    assert parse_args([]).epochs == 24


def test_an_out_inside_the_data_is_refused_before_any_work(tiny_folder, capsys):
    """Its run folders would become a class (or images) of the next run on the same data."""
    line = refusal(["--data", str(tiny_folder), "--out", str(tiny_folder / "train" / "runs")], capsys)
    assert line.startswith(f"error: --out {tiny_folder / 'train' / 'runs'} lies inside the data, --data {tiny_folder}")
    assert parse_args(["--data", str(tiny_folder), "--out", str(tiny_folder.parent / "runs")]).out


# Issue 24, classes 7 and 8: refused before torch loads, and records that say what happened ---

@pytest.mark.parametrize("argv,line", [
    (["--lr-min", "2"], "--lr-min 2 is not below any LRMAX the LR range test can find (at most 1: its highest LR, "
                        "10, over 10): give --lr-max too, or a lower --lr-min"),
    (["--find-lr", "--lr-min", "1e-4", "--lr-max", "1e-3"], "--find-lr finds LRMIN and LRMAX: drop --lr-min and "
                                                            "--lr-max, or --find-lr to train with them"),
    (["--runs", "99999999999999999999"], "--runs must lie in [1, 10000], not 99999999999999999999"),
])
def test_what_cannot_run_is_refused_naming_the_flag_at_fault(argv, line, capsys):
    """An LRMIN above any LRMAX was refused after the range test's minutes; --find-lr with both LRs
    recorded LRs it never used; a huge --runs blamed --seed."""
    assert refusal(argv, capsys) == f"error: {line} (see --help)"


def test_data_that_is_a_link_loop_or_holds_an_invisible_character_is_named_as_such(tmp_path, monkeypatch, capsys):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert f"{tmp_path / 'loop'} is a link that leads back to itself" in refusal(["--data", str(tmp_path / "loop")],
                                                                                capsys)
    monkeypatch.setenv("CIFAR10_DATA", f"{tmp_path}/cifar10.tgz\r")  # pasted from a file with Windows line ends
    assert f"error: CIFAR10_DATA={tmp_path}/cifar10.tgz\\x0d: " in refusal([], capsys)


# Hostile input, round 5: groups' flags and folders ----------------------------------------------

@pytest.mark.parametrize("argv,line", [
    (["--parallel", "2"], "--parallel goes with --runs, --sweep or --search (a group's workers): drop it"),
    (["--storage", "postgresql://me:pw@db/studies"], "--storage goes with --runs, --sweep or --search (a group's "
                                                     "study): drop it"),
    (["--final-runs", "5", "--runs", "2"], "--final-runs goes with --search: drop it, or search"),
    (["--lr-max", "1e-3", "--sweep", "lr_max=1e-3,2e-3"], "--lr-max 0.001 and --sweep lr_max=1e-3,2e-3 both set "
                                                          "lr_max: drop --lr-max (the group gives each run its own)"),
    (["--width", "8", "--search", "width=4:16"], "--width 8 and --search width=4:16 both set width: drop --width (the "
                                                 "group gives each run its own)"),
])
def test_a_groups_flag_that_would_do_nothing_is_refused(argv, line, capsys):
    """Each ran, the flag ignored, and config.json recorded it as if it had been used."""
    assert refusal(argv, capsys) == f"error: {line} (see --help)"


def group_folder(tmp_path, **settings_saved):
    """A group folder as train_fastai.py starts one, its study.json's settings changed by `settings_saved`."""
    from cifar10_fast.core.config import record
    group = tmp_path / "runs" / "20250101-120000-group"
    group.mkdir(parents=True)
    saved = {**record(parse_args(["--runs", "2", "--out", str(tmp_path / "runs")])), **settings_saved}
    (group / "study.json").write_text(json.dumps({"settings": saved, "key": "x", "study": "x", "finished": False}))
    return group


@pytest.mark.parametrize("saved,says", [
    (dict(epochs="2"), "holds epochs = '2', which --epochs cannot give"),
    (dict(sweep="lr_max=1e-3,2e-3"), "holds sweep = 'lr_max=1e-3,2e-3', which --sweep cannot give"),
    (dict(width=None), "holds width = None, which --width cannot give"),
])
def test_a_group_folders_damaged_settings_are_one_line(tmp_path, capsys, saved, says):
    """A study.json edited by hand (or from someone else) failed with a TypeError's traceback."""
    group = group_folder(tmp_path, **saved)
    assert refusal(["--resume", str(group)], capsys) == (f"error: {group / 'study.json'} {says}: the group folder is "
                                                         "damaged; start the group again (see --help)")


def test_a_group_folder_whose_settings_are_not_an_object_is_one_line(tmp_path, capsys):
    group = group_folder(tmp_path)
    (group / "study.json").write_text(json.dumps({"settings": [1]}))
    assert f"{group / 'study.json'} is damaged: start the group again" in refusal(["--resume", str(group)], capsys)


def test_a_group_resumed_into_another_out_is_refused(tmp_path, capsys):
    """--out was ignored: the group went on in its own folder's --out."""
    group = group_folder(tmp_path)
    assert refusal(["--resume", str(group), "--out", str(tmp_path / "elsewhere")], capsys) == (
        f"error: {group} belongs to --out {group.parent}, not {tmp_path / 'elsewhere'}: drop --out to go on with the "
        "group (see --help)")
    assert parse_args(["--resume", str(group), "--out", str(group.parent)]).runs == 2


# hostile input, round 5: a group's --storage, from where it was given --------------------------

def test_a_relative_sqlite_storage_means_the_file_in_the_folder_it_was_typed_in(tmp_path, monkeypatch):
    """`--storage sqlite:///study.db`, resumed from another folder, opened another (empty) database there
    and trained the group again from its first run."""
    monkeypatch.chdir(tmp_path)
    config = parse_args(["--runs", "2", "--storage", "sqlite:///study.db?timeout=5"])
    assert config.storage == f"sqlite:///{tmp_path / 'study.db'}?timeout=5"
    assert parse_args(["--runs", "2", "--storage", f"sqlite:///{tmp_path}/s.db"]).storage == f"sqlite:///{tmp_path}/s.db"


def test_a_group_resumed_without_storage_goes_on_in_the_database_it_was_started_with(tmp_path):
    """The line a stopped group prints, `train_fastai.py --resume GROUP`, pasted: its study went on in a
    new journal in the group folder, not the --storage database, and every finished run was trained again."""
    group = group_folder(tmp_path, storage=f"sqlite:///{tmp_path}/study.db")
    assert parse_args(["--resume", str(group)]).storage == f"sqlite:///{tmp_path}/study.db"
