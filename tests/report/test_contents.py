"""contents.py through the commands (no browser): evaluate.py and predict.py write a page
whose files all lie in its folder and name nothing outside it; --no-report writes none."""
import json

import numpy as np
from PIL import Image

import evaluate
import predict
from helpers import data_info, save_test_checkpoint, write_image


def data_js(folder):
    text = (folder / "report_files" / "data.js").read_text(encoding="utf-8")
    return json.loads(text[text.index("{"):text.rindex("}") + 1])


def write_split(root, count=3):
    for kind in ("images", "masks"):
        (root / "test" / kind).mkdir(parents=True)
    for index in range(count):
        write_image(root / "test" / "images" / f"a{index}.png", 20, 28, seed=index)
        mask = np.zeros((20, 28), np.uint8)
        mask[5:12, 3:9] = 1 + index % 2
        Image.fromarray(mask).save(root / "test" / "masks" / f"a{index}.png")
    return root


def assert_self_contained(folder):
    for row in data_js(folder)["images"]:
        for key in ("image", "thumb", "layers"):
            assert (folder / row[key]).is_file(), row[key]
    page = (folder / "report.html").read_text()
    for link in ("http://", "https://", "//cdn"):
        assert link not in page
    assert "fetch(" not in (folder / "report_files" / "report.js").read_text()


def test_evaluate_writes_the_page_and_names_it_last(tmp_path, capsys):
    root = write_split(tmp_path / "data")
    (tmp_path / "run").mkdir()
    checkpoint = save_test_checkpoint(tmp_path / "run" / "best.pt", 3, info=data_info(3))
    (tmp_path / "run" / "train.log").write_text("plan:\n  crop size  96 px  auto\n")
    argv = ["--checkpoint", checkpoint, "--data", root, "--split", "test", "--worst", "0",
            "--mc-samples", "2"]
    assert evaluate.main(evaluate.get_args_parser().parse_args(map(str, argv))) == 0
    out = tmp_path / "run" / "eval-test"
    assert capsys.readouterr().out.strip().splitlines()[-1] == (
        f"report page: {out / 'report.html'} (3 images; open it in a browser)")
    assert_self_contained(out)
    data = data_js(out)
    assert data["layers"] == ["truth", "pred", "errors", "uncertainty"]
    assert [row["name"] for row in data["images"]] == ["a0", "a1", "a2"]
    assert "crop size  96 px" in (out / "report.html").read_text()


def test_no_report_writes_no_page(tmp_path):
    root = write_split(tmp_path / "data", count=1)
    checkpoint = save_test_checkpoint(tmp_path / "best.pt", 3, info=data_info(3))
    argv = ["--checkpoint", checkpoint, "--data", root, "--out", tmp_path / "eval",
            "--no-report"]
    assert evaluate.main(evaluate.get_args_parser().parse_args(map(str, argv))) == 0
    assert (tmp_path / "eval" / "report.json").is_file()
    assert not (tmp_path / "eval" / "report.html").exists()
    assert not (tmp_path / "eval" / "report_files").exists()


def test_predict_report_is_self_contained_and_off_by_default(tmp_path):
    inputs = write_split(tmp_path / "data", count=2) / "test" / "images"
    checkpoint = save_test_checkpoint(tmp_path / "best.pt", 3, info=data_info(3))
    for output, extra in (("plain", []), ("paged", ["--report"])):
        argv = ["--checkpoint", checkpoint, "--input", inputs, "--output", tmp_path / output]
        assert predict.main(predict.get_args_parser().parse_args(map(str, argv + extra))) == 0
    assert not (tmp_path / "plain" / "report.html").exists()
    assert_self_contained(tmp_path / "paged")
    assert data_js(tmp_path / "paged")["layers"] == ["pred", "uncertainty"]


def test_a_fold_ensemble_shows_each_fold_beside_it(tmp_path):
    root = write_split(tmp_path / "data", count=2)
    checkpoints = []
    for fold in range(2):
        (tmp_path / f"fold_{fold}").mkdir()
        checkpoints.append(save_test_checkpoint(tmp_path / f"fold_{fold}" / "last.pt", 3,
                                                info=data_info(3), seed=fold))
        (tmp_path / f"fold_{fold}" / "metrics.csv").write_text(
            "epoch,train_loss,val_loss,miou,mean_dice\n1,0.9,0.8,0.4,0.5\n2,0.7,0.6,0.5,0.6\n")
    argv = ["--checkpoint", *checkpoints, "--data", root, "--out", tmp_path / "eval"]
    assert evaluate.main(evaluate.get_args_parser().parse_args(map(str, argv))) == 0
    page = (tmp_path / "eval" / "report.html").read_text()
    folds = page[page.index('id="folds"'):page.index("</section>", page.index('id="folds"'))]
    assert str(checkpoints[0]) in folds and str(checkpoints[1]) in folds
    assert "ensemble of 2" in folds and "IoU class_2" in folds
    assert all((tmp_path / "eval" / "report_files" / f"curves_{k}.png").is_file()
               for k in range(2))
