"""One frozen Config holds every setting with its default: presets and sweep points replace some of
them, config.json records it, and a saved value is checked against its field's type."""
import dataclasses

import pytest

from cifar10_fast.core.config import (
    PEAK_FRACTION,
    PRESETS,
    RECIPE,
    RESUMED,
    RUN_SETTINGS,
    Config,
    fits,
    member,
    preset,
    record,
)
from cifar10_fast.core.settings import flags_parser, parse_args


def test_the_defaults_are_the_recipe():
    assert (RECIPE.epochs, RECIPE.bs, RECIPE.wd, RECIPE.width, RECIPE.aug, RECIPE.label_smoothing) == (
        24, 512, 0.01, 64, "gpu", 0.0)
    assert parse_args([]) == dataclasses.replace(RECIPE, data_given=None)


def test_a_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RECIPE.epochs = 2


def test_every_flag_is_a_field_and_has_no_default_of_its_own():
    """The parser gives only the flags given: every default lives in Config."""
    actions = [action for action in flags_parser()._actions if action.dest != "help"]
    assert {action.dest for action in actions} <= set(Config.__dataclass_fields__)
    assert vars(flags_parser().parse_args([])) == {}


def test_a_preset_replaces_its_settings_and_given_ones_win():
    fast = preset("fast", epochs=12)
    assert fast.preset == "fast" and fast.epochs == 12 and fast.label_smoothing == PRESETS["fast"]["label_smoothing"]
    assert dataclasses.replace(fast, epochs=RECIPE.epochs, label_smoothing=0.0, tta=False, preset="seed") == RECIPE


def test_a_member_takes_its_point_its_seed_and_a_peak_epoch_of_its_own_epochs():
    config = preset("seed", name="lr", runs=2)
    point = member(config, {"epochs": 12, "lr_max": 4e-3}, seed=3, group="g")
    assert (point.epochs, point.lr_max, point.seed, point.group) == (12, 4e-3, 3, "g")
    assert point.peak_epoch == 12 * PEAK_FRACTION and point.name == "lr-epochs=12,lr_max=0.004-seed3"
    assert member(preset("seed", peak_epoch=0.0), {}).peak_epoch == 0.0  # given, even if 0: refused later
    assert member(config, {}).name == "lr" and member(config, {}).sweep_point is None


def test_config_json_records_every_field():
    recorded = record(RECIPE)
    assert set(recorded) == set(Config.__dataclass_fields__) and recorded["sweep"] is None
    assert record(preset("seed", sweep=("lr_max=1e-3",)))["sweep"] == ["lr_max=1e-3"]
    assert recorded["track"] == ["tensorboard"]  # JSON's list, which a resume takes back


@pytest.mark.parametrize("name,value,fit", [
    ("epochs", 24, True), ("epochs", 24.0, False), ("epochs", True, False), ("epochs", None, False),
    ("lr_max", 1, True), ("lr_max", None, True), ("lr_max", "1e-3", False),
    ("aug", "albumentations", True), ("aug", "magic", False), ("tta", 1, False), ("name", None, True),
    ("track", ["tensorboard", "wandb"], True), ("track", [], True), ("track", "tensorboard", False),
    ("track", ["comet"], False)])
def test_a_saved_value_fits_its_field(name, value, fit):
    assert fits(name, value) is fit


def test_what_makes_a_run_the_same_run_is_taken_back_by_a_resume():
    assert set(RUN_SETTINGS) <= set(RESUMED) and {"name", "tta", "target_acc"} <= set(RESUMED)
    assert "device" not in RESUMED and "workers" not in RESUMED
