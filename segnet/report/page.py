"""report.html: the template in page/ filled with the static sections, its stylesheet and
script copied beside it, and data.js written once. The result is a folder that opens from
file:// with a double click: no server, no network, no build step."""
import argparse
import re
import shutil
from pathlib import Path

from segnet import utils
from segnet.report import pagedata
from segnet.report.pictures import FILES, MAX_SIDE, THUMB_SIDE

MIN_SIDE = THUMB_SIDE  # a page's pictures are never smaller than its thumbnails

PAGE = Path(__file__).resolve().parent / "page"  # report.html, report.css, report.js
SLOT = re.compile(r"\{\{(\w+)\}\}")
BLOCK = re.compile(r"<!-- if (\w+) -->(.*?)<!-- end \1 -->", re.S)


def add_report_args(parser, default, what):
    """--report / --no-report (on or off by default) and --report-max-side, for evaluate.py
    and predict.py; what: what the page shows, for the help."""
    parser.add_argument("--report", action=argparse.BooleanOptionalAction, default=default,
                        help=f"write report.html in the output folder: {what}; a folder that "
                             f"opens by a double click, no server (docs/report.md)")
    parser.add_argument("--report-max-side", type=int, default=MAX_SIDE, metavar="PIXELS",
                        help="report.html: images and layers larger than this a side are "
                             "scaled down in the page (the scores are not)")


def report_problems(args):
    """What is wrong with the report flags, as sentences."""
    if args.report and args.report_max_side < MIN_SIDE:
        return [f"--report-max-side must be at least {MIN_SIDE} pixels, got "
                f"{args.report_max_side}"]
    return []


def fill(template, values):
    """The template with each `<!-- if NAME -->...<!-- end NAME -->` block kept where
    values[NAME] is truthy (dropped where not), then each {{NAME}} replaced by values[NAME]."""
    while BLOCK.search(template):
        template = BLOCK.sub(lambda match: match.group(2) if values.get(match.group(1)) else "",
                             template)
    missing = sorted(set(SLOT.findall(template)) - set(values))
    assert not missing, f"report.html has slots no value fills: {missing}"
    return SLOT.sub(lambda match: str(values[match.group(1)]), template)


def write_page(out, values, data):
    """out/report.html from the template and values (sections.py's fragments, already
    escaped), with report_files/{report.css, report.js, data.js}. Returns report.html's path."""
    out = Path(out)
    files = out / FILES
    files.mkdir(parents=True, exist_ok=True)
    for name in ("report.css", "report.js"):
        shutil.copyfile(PAGE / name, files / name)
    with utils.atomic_write(files / "data.js", encoding="utf-8") as handle:
        handle.write(pagedata.data_script(data))
    page = fill((PAGE / "report.html").read_text(encoding="utf-8"), values)
    with utils.atomic_write(out / "report.html", encoding="utf-8") as handle:
        handle.write(page)
    return out / "report.html"


def folder_size(folder):
    """Bytes of every file under folder."""
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())
