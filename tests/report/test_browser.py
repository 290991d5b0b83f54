"""The report page in a real browser (headless Chromium, from file://): evaluate's and
predict's pages list every image in order, a layer toggle and a class toggle change the pixels
drawn, the class filter narrows the list, a 10,000-image page opens in pages, the summary
shows with scripts off, and the console stays free of errors."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import evaluate
import predict
from chromium import Browser, require_chromium
from helpers import data_info, save_test_checkpoint, write_image
from segnet.report import contents, page, pagedata, pictures

require_chromium()  # else the whole file is skipped, in one line saying why

ALPHA = round(0.6 * 255)  # the page's default layer opacity (report.js: state.opacity)
CANVAS_PIXELS = """const canvas = document.getElementById('layer');
return Array.from(canvas.getContext('2d').getImageData(0, 0, canvas.width,
                                                       canvas.height).data);"""
CARD_NAMES = "return Array.from(document.querySelectorAll('#grid li')).map(li => li.dataset.name)"


def write_split(root, sizes, seed=0):
    """test/images + test/masks: 3 index classes, images of several sizes."""
    rng = np.random.default_rng(seed)
    (root / "test" / "images").mkdir(parents=True)
    (root / "test" / "masks").mkdir(parents=True)
    for index, (height, width) in enumerate(sizes):
        mask = np.zeros((height, width), np.uint8)
        top, left = rng.integers(0, height - 8), rng.integers(0, width - 8)
        mask[top:top + 8, left:left + 8] = 1
        mask[rng.integers(0, height - 3):][:3] = 2
        mask[0, 0] = 255  # an ignored pixel
        Image.fromarray(mask).save(root / "test" / "masks" / f"s{index}.png")
        write_image(root / "test" / "images" / f"s{index}.png", height, width, seed=index)
    return root


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """evaluate.py's folder on 6 images (a random 3-class model: every image has mistakes)."""
    root = write_split(tmp_path_factory.mktemp("data"), [(24, 24), (24, 24), (32, 24),
                                                         (24, 40), (24, 24), (17, 23)])
    folder = tmp_path_factory.mktemp("eval")
    checkpoint = save_test_checkpoint(folder / "best.pt", 3, info=data_info(3))
    assert evaluate.main(evaluate.get_args_parser().parse_args([
        "--checkpoint", str(checkpoint), "--data", str(root), "--split", "test",
        "--out", str(folder / "eval"), "--worst", "0"])) == 0
    return root, folder / "eval"


@pytest.fixture(scope="module")
def browser():
    with Browser() as opened:
        yield opened


def opened(browser, page_path):
    browser.open(page_path)
    browser.wait_for("return document.body.dataset.ready")
    return browser


def page_data(folder):
    text = (folder / "report_files" / "data.js").read_text(encoding="utf-8")
    return json.loads(text[text.index("{"):text.rindex("}") + 1])


def errors(entries):
    return [entry for entry in entries if entry["level"] == "SEVERE"]


def test_evaluate_names_the_page_and_the_gallery_holds_every_image_worst_first(evaluated,
                                                                            browser):
    _, out = evaluated
    report = json.loads((out / "report.json").read_text())
    opened(browser, out / "report.html")
    assert browser.run(CARD_NAMES) == [entry["name"] for entry in report["per_image"]]
    thumbs = browser.wait_for("const images = Array.from(document.querySelectorAll('#grid img'));"
                              "return images.every(i => i.complete && i.naturalWidth > 0) "
                              "&& images.length")
    assert thumbs == 6
    assert browser.run("return document.getElementById('count').textContent") == "1-6 of 6 images"
    assert errors(browser.console()) == []


def open_viewer(browser, position=0):
    browser.run("document.querySelectorAll('#grid a')[arguments[0]].click()", position)
    return browser.wait_for("return document.getElementById('stage').dataset.drawn")


def choose_layer(browser, name):
    browser.run(f"document.querySelector('input[name=layer][value={name}]').click()")
    return browser.wait_for("return (document.getElementById('stage').dataset.drawn || '')"
                            ".startsWith(arguments[0] + ':')", name)


def test_a_layer_toggle_changes_the_pixels_drawn_to_the_masks_colours(evaluated, browser):
    root, out = evaluated
    opened(browser, out / "report.html")
    data = page_data(out)
    assert open_viewer(browser).startswith("errors:")
    errors_drawn = browser.run(CANVAS_PIXELS)
    choose_layer(browser, "truth")
    truth_drawn = np.array(browser.run(CANVAS_PIXELS), np.uint8)
    assert truth_drawn.tolist() != errors_drawn
    row = data["images"][0]
    mask = np.asarray(Image.open(root / "test" / "masks" / f"{row['name']}.png"))
    drawn = truth_drawn.reshape(*mask.shape, 4)
    colors = np.array([c["color"] for c in data["classes"]] + [[255, 255, 255]], np.uint8)
    expected = colors[np.where(mask == 255, 3, mask)]
    assert (drawn[..., :3] == expected).all() and (drawn[..., 3] == ALPHA).all()
    browser.run("document.querySelector('#toggles label[data-cls=\"1\"] input').click()")
    hidden = np.array(browser.run(CANVAS_PIXELS), np.uint8).reshape(*mask.shape, 4)
    assert (hidden[..., 3][mask == 1] == 0).all() and (hidden[..., 3][mask != 1] == ALPHA).all()
    choose_layer(browser, "none")
    assert not any(browser.run(CANVAS_PIXELS)[3::4])
    assert errors(browser.console()) == []


def test_arrow_keys_move_and_escape_closes(evaluated, browser):
    _, out = evaluated
    opened(browser, out / "report.html")
    names = browser.run(CARD_NAMES)
    open_viewer(browser, 2)
    browser.run("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowRight'}))")
    browser.wait_for("return document.getElementById('viewer-name').textContent === arguments[0]",
                     names[3])
    assert browser.run("return document.getElementById('position').textContent") == "4 / 6"
    browser.run("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape'}))")
    assert browser.wait_for("return document.getElementById('viewer').hidden")
    assert errors(browser.console()) == []


def test_the_class_filter_narrows_the_list(evaluated, browser):
    _, out = evaluated
    opened(browser, out / "report.html")
    rows = page_data(out)["images"]
    recalls = sorted(row["classes"]["recall"][2] for row in rows)
    threshold = recalls[len(recalls) // 2]  # the median: about half the images are below it
    expected = [row["name"] for row in rows if row["classes"]["recall"][2] < threshold]
    assert 0 < len(expected) < len(rows)
    browser.run("""
        document.getElementById('filter-measure').value = 'recall';
        document.getElementById('filter-value').value = String(arguments[0]);
        const select = document.getElementById('filter-class');
        select.value = '2';
        select.dispatchEvent(new Event('change'));""", threshold)
    shown = browser.run(CARD_NAMES)
    assert sorted(shown) == sorted(expected) and len(shown) < len(rows)
    assert browser.run("return document.getElementById('count').textContent").endswith(
        "(filtered from 6)")
    assert errors(browser.console()) == []


def test_with_scripts_off_the_summary_and_tables_still_show(evaluated):
    _, out = evaluated
    report = json.loads((out / "report.json").read_text())
    with Browser(scripts=False) as off:
        off.open(out / "report.html")
        assert off.run("return window.REPORT_DATA === undefined")  # no page script ran
        text = off.run("return document.body.innerText")
        assert off.run("return document.querySelectorAll('#grid li').length") == 0
        assert off.run("return document.querySelectorAll('table.heat td').length") == 9
    assert f"{report['miou']:.4f}" in text and "class_2" in text and "sort by" not in text
    assert "need JavaScript" in text and "Per class" in text and "Confusion matrix" in text


def test_predict_report_lists_images_most_uncertain_first_with_two_layers(tmp_path, browser):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for index, (height, width) in enumerate([(24, 24), (30, 20), (16, 40), (24, 24)]):
        write_image(inputs / f"p{index}.png", height, width, seed=index)
    checkpoint = save_test_checkpoint(tmp_path / "best.pt", 3, info=data_info(3))
    assert predict.main(predict.get_args_parser().parse_args([
        "--checkpoint", str(checkpoint), "--input", str(inputs), "--output",
        str(tmp_path / "out"), "--report"])) == 0
    with open(tmp_path / "out" / "review.csv", newline="") as handle:
        review = [row["file"] for row in csv.DictReader(handle)]
    opened(browser, tmp_path / "out" / "report.html")
    assert browser.run(CARD_NAMES) == review
    assert browser.run("return Array.from(document.querySelectorAll('input[name=layer]'))"
                       ".map(i => i.value)") == ["none", "pred", "uncertainty"]
    assert open_viewer(browser).startswith("pred:")
    choose_layer(browser, "uncertainty")
    assert any(browser.run(CANVAS_PIXELS)[3::4])
    assert errors(browser.console()) == []


def write_big_page(out, count, distinct=40):
    """A page of `count` images whose files repeat `distinct` real ones (row i shows file
    i % distinct), as the writer makes them: the browser's work is the page's, not the disk's."""
    colors = [[0, 0, 0], [230, 25, 75], [60, 180, 75]]
    folder = pictures.PageFolder(out, colors)
    rng = np.random.default_rng(0)
    files = []
    for number in range(distinct):
        preds = rng.integers(0, 3, (48, 64))
        folder.add_layers(number, preds, truth=rng.integers(0, 3, (48, 64)))
        files.append(folder.add_image(number, rng.random((3, 48, 64), dtype=np.float32)))
    per_image, ranking = [], []
    for index in range(count):
        confusion = rng.integers(0, 50, (3, 3))
        per_image.append({"name": f"img_{index:05d}", "confusion": confusion,
                          "bf_classes": rng.random(3).tolist()})
        ranking.append({"name": f"img_{index:05d}", "miou": float(rng.random()),
                        "pixel_acc": float(rng.random()), "bf": float(rng.random())})
    rows = pagedata.evaluate_rows(per_image, ranking, [files[i % distinct] for i in range(count)])
    info = {"class_names": ["background", "road", "pole"]}
    data = pagedata.page_data("evaluate", "big", info, colors, rows,
                              ["truth", "pred", "errors"], {"key": "v:miou", "order": "worst"})
    values = dict.fromkeys(contents.predict_values("x", [], info, colors, 0, 0), "")
    values.update(title="big", subtitle="", facts="")
    return page.write_page(out, values, data), rows


def test_a_10000_image_page_opens_in_pages_and_its_last_image_views(tmp_path, browser):
    path, rows = write_big_page(tmp_path, 10_000)
    opened(browser, path)
    assert browser.run("return document.getElementById('count').textContent") == (
        "1-240 of 10,000 images")
    assert len(browser.run(CARD_NAMES)) == 240
    assert browser.run("return document.querySelectorAll('#pager-top option').length") == 42
    browser.run("const select = document.querySelector('#pager-top select');"
                "select.value = '41'; select.dispatchEvent(new Event('change'));")
    last = browser.run(CARD_NAMES)
    worst_first = sorted(rows, key=lambda row: row["values"]["miou"])
    assert last == [row["name"] for row in worst_first[41 * 240:]]
    assert open_viewer(browser, len(last) - 1).startswith("errors:")
    assert browser.run("return document.getElementById('position').textContent") == (
        "10000 / 10000")
    assert errors(browser.console()) == []


def test_a_page_without_its_folder_says_what_it_needs(tmp_path, browser):
    path, _ = write_big_page(tmp_path, 3, distinct=3)
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "report.html").write_text(path.read_text())
    browser.open(lone / "report.html")
    browser.wait_for("return document.readyState === 'complete'")
    assert browser.run("const note = document.getElementById('needs');"
                       "return !note.hidden && note.textContent") .startswith("The gallery")
    missing = [entry["message"] for entry in errors(browser.console())]
    assert missing and all("report_files/" in message for message in missing)
