"""The page's static parts as HTML fragments filled into report.html's slots: the facts, the
per-class table with its health marks, the confusion heat map (counts on hover), the folds
beside the ensemble, the plan table. They need no script, so the summary reads with scripts
off; every text from the data is escaped."""
import html
import math

import torch

LIGHT, DARK = (247, 251, 255), (8, 48, 107)  # the heat map's ends (matplotlib's "Blues")


def text(value):
    return html.escape(str(value))


def number(value, digits=4):
    """A score to `digits` decimals; `-` where undefined (NaN or None)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def swatch(color):
    red, green, blue = (int(channel) for channel in color)
    return f'<span class="swatch" style="background: rgb({red}, {green}, {blue})"></span>'


def facts(pairs):
    """<dt>/<dd> pairs of (label, value); values None are left out."""
    return "".join(f"<dt>{text(label)}</dt><dd>{text(value)}</dd>" for label, value in pairs
                   if value is not None)


def table(headers, rows):
    """<thead> and <tbody> of a table; headers are text, rows' cells HTML (escaped by their
    maker). A header starting with '#' marks a numeric column (right-aligned)."""
    head = "".join(f'<th class="num">{text(h[1:])}</th>' if h.startswith("#")
                   else f"<th>{text(h)}</th>" for h in headers)
    numeric = [h.startswith("#") for h in headers]
    body = "".join("<tr>" + "".join(f'<td class="num">{cell}</td>' if right else f"<td>{cell}</td>"
                                    for cell, right in zip(row, numeric)) + "</tr>"
                   for row in rows)
    return f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody>"


def class_name(name, color, flagged=False):
    mark = ' <span class="health-mark" title="see the health notes">!</span>' if flagged else ""
    return f"{swatch(color)}{text(name)}{mark}"


def evaluate_classes(metrics, boundary, health, colors):
    """The per-class table as evaluate prints it: IoU, Dice, precision, recall, support, BF,
    `!` on the classes a health note names."""
    rows = []
    for index, entry in enumerate(metrics["per_class"]):
        flagged = any(f"class '{entry['name']}'" in sentence for sentence in health)
        rows.append([class_name(entry["name"], colors[index], flagged), number(entry["iou"]),
                     number(entry["dice"]), number(entry["precision"]), number(entry["recall"]),
                     f"{entry['support']:,}", number(boundary["bf"][index]["bf"])])
    return table(["class", "#IoU", "#Dice", "#precision", "#recall/acc", "#support (px)", "#BF"],
                 rows)


def health_notes(health):
    """The health warnings as a list, or "" when there are none."""
    return "".join(f"<li>{text(sentence)}</li>" for sentence in health)


def heat(rate):
    """The CSS colour of a rate in [0, 1] and the text colour that reads on it."""
    red, green, blue = (round(low + (high - low) * rate) for low, high in zip(LIGHT, DARK))
    return f"background: rgb({red}, {green}, {blue}); color: {'#fff' if rate > 0.5 else '#000'}"


def confusion_heat_map(confusion, class_names, colors):
    """The confusion matrix as a table whose cells are shaded by the row's share (each true
    class sums to 1); the pixel count is in each cell's hover text."""
    counts = torch.as_tensor(confusion).double()
    rates = (counts / counts.sum(1, keepdim=True).clamp(min=1)).tolist()
    head = "".join(f'<th class="col" title="predicted {text(name)}">{swatch(colors[col])}'
                   f"{text(name)}</th>" for col, name in enumerate(class_names))
    rows = []
    for row, true_name in enumerate(class_names):
        cells = "".join(
            f'<td style="{heat(rates[row][col])}" title="true {text(true_name)}, predicted '
            f'{text(predicted)}: {int(counts[row, col]):,} pixels ({rates[row][col]:.1%} of '
            f'{text(true_name)})">{rates[row][col]:.2f}</td>'
            for col, predicted in enumerate(class_names))
        rows.append(f"<tr><th>{swatch(colors[row])}{text(true_name)}</th>{cells}</tr>")
    return (f'<thead><tr><th class="corner">true \\ predicted</th>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody>")


def folds_beside_ensemble(folds, metrics, class_names):
    """Each fold's model alone beside the ensemble: a column each, rows mIoU, G and each
    class's IoU."""
    names = [fold["checkpoint"] for fold in folds] + [f"ensemble of {len(folds)}"]
    columns = folds + [{"miou": metrics["miou"], "pixel_acc": metrics["pixel_acc"],
                        "iou": [entry["iou"] for entry in metrics["per_class"]]}]
    rows = [["<strong>mIoU</strong>"] + [number(column["miou"]) for column in columns],
            ["G (pixel accuracy)"] + [number(column["pixel_acc"]) for column in columns]]
    for index, name in enumerate(class_names):
        rows.append([f"IoU {text(name)}"] + [number(column["iou"][index]) if "iou" in column
                                              else "-" for column in columns])
    return table(["model"] + [f"#{name}" for name in names], rows)


def predict_classes(rows, class_names, colors):
    """Predicted share of all pixels and the images a class appears in, per class."""
    shares = [[row["classes"]["share"][index] or 0 for row in rows]
              for index in range(len(class_names))]
    total = max(len(rows), 1)
    return table(["class", "#mean share of an image", "#images where predicted"], [
        [class_name(name, colors[index]), number(sum(shares[index]) / total),
         f"{sum(share > 0 for share in shares[index]):,}"]
        for index, name in enumerate(class_names)])


def figures(items):
    """<figure>s of (relative path, caption)."""
    return "".join(f'<figure><img src="{text(path)}" alt="{text(caption)}" loading="lazy">'
                   f"<figcaption>{text(caption)}</figcaption></figure>" for path, caption in items)


def preformatted(lines):
    return text("\n".join(lines))
