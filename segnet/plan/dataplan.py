"""What the labels and the images decide, before the machine's speed and the budget: the
model's channels (colour), rare-class sampling and class weights (the class shares), flips and
rotation (the classes' layout). A pure function of the Fingerprint and the flags; plan.py
puts it in the Plan."""
from segnet.data.pixels.images import colour_channels
from segnet.data.check.labelstats import layout_asymmetry

# Rare classes (Stanford Background, 8 classes, water 4% and mountain 1.2% of the pixels, a
# 10-minute CPU budget: docs/plan.md): cross-entropy weighted by 1/sqrt(share) lifted water
# from IoU 0.00 to 0.12 at the same mIoU, where median-frequency weights left it at 0 and
# 1/share weights cost the common classes 0.04 mIoU. Used with more than two classes when one
# is under RARE_SHARE; binary data has Dice, which weighs both classes equally.
RARE_SHARE = 0.05
RARE_WEIGHTS = "sqrt-inverse"
# Rare-class sampling: this share of the crops is centred on a pixel of a class drawn among
# the train set's classes (sampling.py) when a class is under SAMPLING_SHARE of the pixels.
CLASS_SAMPLING = 0.5
SAMPLING_SHARE = 0.10
# Flips: none along an axis where the classes keep to one half of the image by more than this
# (labelstats.layout_asymmetry: cells and membranes +-0.02, outdoor scenes 0.6 top/bottom);
# rotation only for data with no preferred orientation (both flips kept).
LAYOUT_ASYMMETRY = 0.2
ROTATE = 15.0


def plan_data(fp, flags, plan):
    """The values planned from the labels and the images alone: {in_channels, class_sampling,
    class_weights, hflip, vflip, rotate}, each from its flag when given; reasons in notes."""
    shares, rarest = fp.class_shares, min(fp.class_shares, default=1.0)
    rows = layout_asymmetry(fp.layout_rows, shares)
    cols = layout_asymmetry(fp.layout_cols, shares)
    values = {"in_channels": colour_channels(fp.colour_share),
              "class_sampling": CLASS_SAMPLING if rarest < SAMPLING_SHARE else 0.0,
              "class_weights": (RARE_WEIGHTS if rarest < RARE_SHARE and len(shares) > 2
                                else "none"),
              "hflip": plan.flip and cols <= LAYOUT_ASYMMETRY,
              "vflip": plan.flip and rows <= LAYOUT_ASYMMETRY}
    values = {name: flags[name] if flags.get(name) is not None else value
              for name, value in values.items()}
    both = values["hflip"] and values["vflip"]
    values["rotate"] = flags["rotate"] if flags.get("rotate") is not None else (
        ROTATE if both else 0.0)
    if fp.holdout:
        plan.notes.append(f"validation: {fp.holdout} train images held out (no val/ split)")
    plan.notes.append(
        f"labels: rarest class {rarest:.1%} of the pixels; layout asymmetry top/bottom "
        f"{rows:.2f}, left/right {cols:.2f} (flips kept up to {LAYOUT_ASYMMETRY}); colour in "
        f"{fp.colour_share:.0%} of the train images")
    return values
