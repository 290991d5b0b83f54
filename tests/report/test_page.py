"""page.py: the template's blocks and slots, the folder written, the flags."""
import argparse

import pytest

from segnet.report import page


def test_fill_keeps_truthy_blocks_drops_the_others_and_nests():
    template = ("a<!-- if x -->[{{x}}<!-- if y -->({{y}})<!-- end y -->]<!-- end x -->"
                "<!-- if z -->gone {{z}}<!-- end z -->b")
    assert page.fill(template, {"x": "1", "y": "", "z": None}) == "a[1]b"
    assert page.fill(template, {"x": "1", "y": "2", "z": ""}) == "a[1(2)]b"


def test_fill_refuses_a_slot_without_a_value():
    with pytest.raises(AssertionError, match="missing"):
        page.fill("{{missing}}", {})


def test_write_page_copies_the_page_files_and_writes_the_data(tmp_path):
    values = {"title": "t", "subtitle": "", "facts": "", "health": "", "classes": "",
              "classes_note": "", "confusion": "", "calibration": "", "folds": "",
              "training": False, "curves": "", "plan": ""}
    path = page.write_page(tmp_path, values, {"images": []})
    assert path == tmp_path / "report.html" and "<title>t</title>" in path.read_text()
    for name in ("report.css", "report.js", "data.js"):
        assert (tmp_path / "report_files" / name).stat().st_size > 0
    assert page.folder_size(tmp_path) > path.stat().st_size


@pytest.mark.parametrize("default, argv, expected", [(True, [], True),
                                                     (True, ["--no-report"], False),
                                                     (False, [], False),
                                                     (False, ["--report"], True)])
def test_report_flags(default, argv, expected):
    parser = argparse.ArgumentParser()
    page.add_report_args(parser, default, "what")
    args = parser.parse_args(argv)
    assert args.report is expected and args.report_max_side == page.MAX_SIDE
    assert page.report_problems(args) == []
    args.report_max_side = 10
    assert page.report_problems(args) == ([f"--report-max-side must be at least "
                                           f"{page.MIN_SIDE} pixels, got 10"] if expected else [])
