import pickle

import pandas as pd
import pytest

import predict


def run_predict(capsys, *args):
    predict.main([str(a) for a in args])
    return capsys.readouterr().out


def test_predicts_class_and_probability_for_every_image_of_any_size_or_mode(run_dir, images, capsys):
    out = run_predict(capsys, "--run", run_dir, images)
    lines = out.strip().splitlines()
    assert len(lines) == 1 + 3
    assert all(" cat " in line and "0.2" in line for line in lines[1:])  # softmax of a one-hot bias: e/(e+9)


def test_topk_and_csv(run_dir, images, tmp_path, capsys):
    csv = tmp_path / "out.csv"
    run_predict(capsys, "--run", run_dir, images / "a.png", "--topk", 3, "--csv", csv)
    table = pd.read_csv(csv)
    assert list(table.columns) == ["image", "class", "probability", "class_2", "probability_2", "class_3",
                                   "probability_3"]
    assert table["class"][0] == "cat" and table.probability[0] > table.probability_2[0] >= table.probability_3[0]


def test_csv_never_overwrites(run_dir, images, tmp_path, capsys):
    csv = tmp_path / "mine.csv"
    csv.write_text("precious")
    with pytest.raises(SystemExit):
        run_predict(capsys, "--run", run_dir, images, "--csv", csv)
    assert csv.read_text() == "precious"


def test_pickle_is_only_loaded_when_asked(run_dir, images, capsys):
    class Payload:
        def __reduce__(self):
            return (open, (str(run_dir / "pwned"), "w"))

    (run_dir / "export.pkl").write_bytes(pickle.dumps(Payload()))
    run_predict(capsys, "--run", run_dir, images / "a.png")
    assert not (run_dir / "pwned").exists()
