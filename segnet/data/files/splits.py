"""Splits by group: a sample's group is its stack or volume (every page of one file), or the part
of its name that --group-pattern matches (case07 of case07_slice112.png), else the sample
itself. A held-out val or test split takes whole groups, chosen by a hash of the group's name
(the same on every machine; adding files moves few), as nnU-Net and MONAI split by case; a
dataset of one stack gives a contiguous block of its pages. Also: groups found in two splits."""
import hashlib
import re
from collections import defaultdict

from segnet.data.pixels.stacks import Page
from segnet.utils import DataError, name_list

HOLDOUT_SHARE = 0.15  # of the train samples held out for validation when there is no val split


def check_pattern(pattern):
    """The compiled --group-pattern; DataError when it is no regular expression."""
    try:
        return re.compile(pattern)
    except re.error as error:
        raise DataError(f"--group-pattern {pattern!r} is not a regular expression ({error}); "
                        f"e.g. 'case\\d+' groups case07_slice112.png under case07") from error


def sample_group(name, image, pattern=None):
    """The group of a sample (name, image source): its stack's name for a page, else what
    --group-pattern matches in its name (the first parenthesised group, or the whole match),
    else the name. DataError when a name does not match the pattern."""
    if isinstance(image, Page):
        return name.rpartition("@")[0]
    if not pattern:
        return name
    match = check_pattern(pattern).search(name)
    if not match:
        raise DataError(f"--group-pattern {pattern!r} does not match the file name {name!r}: "
                        f"every sample needs a group; widen the pattern")
    return match.group(1) if match.groups() and match.group(1) else match.group(0)


def groups_of(samples, pattern=None):
    """{group: [sample names]} in the samples' order."""
    groups = defaultdict(list)
    for name, image, _ in samples:
        groups[sample_group(name, image, pattern)].append(name)
    return dict(groups)


def _hash(text):
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _count(share, total):
    """How many of total samples a share holds: at least 1, leaving at least 1."""
    return min(total - 1, max(1, round(share * total)))


def _take(groups, ranked, count, keep):
    """Whole groups, in ranked order, until they hold count samples, leaving `keep` groups:
    (taken names sorted, the groups left)."""
    ranked, taken = list(ranked), []
    while len(ranked) > keep and len(taken) < count:
        taken += groups[ranked.pop(0)]
    return sorted(taken), ranked


def carve(samples, share=HOLDOUT_SHARE, test_share=0.0, pattern=None, where="train"):
    """(val names, test names, warning or None): about `share` (and `test_share`) of the
    samples held out by whole groups. DataError when too few samples or groups are left."""
    groups = groups_of(samples, pattern)
    total = len(samples)
    needed = 1 + bool(share) + bool(test_share)
    held = " and ".join(["validation"] * bool(share) + ["test"] * bool(test_share))
    if total < needed:
        raise DataError(f"{where} has {total} sample(s): a hold-out for {held} needs at least "
                        f"{needed}; add a val split (ROOT/val/images and ROOT/val/masks) or more "
                        f"data")
    if len(groups) == 1:
        first = samples[0][1]
        return _carve_one_stack(samples, share, test_share,
                                first.path.name if isinstance(first, Page) else next(iter(groups)))
    if len(groups) < needed:
        raise DataError(f"{where} has {len(groups)} group(s) ({name_list(list(groups))}): "
                        f"a hold-out for {held} by whole groups needs at least {needed}; add "
                        f"data or a val split")
    ranked, test = sorted(groups, key=_hash), []
    if test_share:
        test, ranked = _take(groups, ranked, _count(test_share, total), keep=2)
    val, _ = _take(groups, ranked, _count(share, total), keep=1) if share else ([], ranked)
    return val, test, None


def _carve_one_stack(samples, share, test_share, group):
    """One stack (ISBI's 30 pages): val (then test) as contiguous blocks at its end."""
    names = [name for name, _, _ in samples]
    total = len(names)
    test_count = _count(test_share, total) if test_share else 0
    val_count = min(total - 1 - test_count, max(1, round(share * total))) if share else 0
    end = total - test_count
    val, test = names[end - val_count:end], names[end:]
    blocks = ([f"val is its pages {end - val_count + 1}-{end}"] * bool(val)
              + [f"test its pages {end + 1}-{total}"] * bool(test))
    warning = (f"one stack ({group}, {total} pages): {' and '.join(blocks)}"
               + ", a contiguous block; neighbouring slices correlate, so their scores are "
                 "optimistic: add other stacks (or a val split) for an honest score")
    return val, test, warning


def leaking_groups(split_samples, pattern=None):
    """[(group, splits)] of groups with samples in two or more splits."""
    where = defaultdict(list)
    for split, samples in split_samples.items():
        for group in groups_of(samples, pattern):
            where[group].append(split)
    return sorted((group, splits) for group, splits in where.items() if len(splits) > 1)


def leak_warning(leaks):
    """One warning for groups found in two splits, or None."""
    if not leaks:
        return None
    listed = ", ".join(f"{group} ({' and '.join(splits)})" for group, splits in leaks[:5])
    more = f" and {len(leaks) - 5} more" if len(leaks) > 5 else ""
    return (f"{len(leaks)} group(s) have samples in two splits: {listed}{more}; slices of one "
            f"case correlate, so the later split's scores are optimistic: move whole groups, or "
            f"leave val out and let it be held out by group")
