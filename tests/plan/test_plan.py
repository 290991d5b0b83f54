"""The training plan: a pure function of the dataset's fingerprint, the flags and the measured
speed (tiny, huge, odd-sized, imbalanced and mixed-size data), explicit flags winning, the time
budget, and train.py's --plan-only, budgeted runs, resume and health warnings."""
import dataclasses
import json
import time

import pytest
import torch

import train
from helpers import write_tiny_dataset
from model import SegNet
from segnet.data.check.scan import scan_dataset
from segnet.plan import curve, plan as planning, speed as speedplan
from segnet.plan.plan import Fingerprint, Speed, make_plan
from segnet.runtime import Runtime
from segnet.training import timing


def fingerprint(images=20, size=(512, 512), sizes=None, val_images=4, shares=(0.5, 0.5),
                void=0.0):
    sizes = sizes or ((*size, images),)
    return Fingerprint(train_images=sum(count for _, _, count in sizes),
                       val_images=val_images, sizes=tuple(sizes),
                       val_pixels=val_images * sizes[0][0] * sizes[0][1],
                       val_size=sizes[0][:2], class_shares=shares, void_share=void)


def cpu_speed(pixels_per_second=300_000, overhead=0.02, infer_factor=4):
    """A CPU that trains at a fixed rate per pixel (plus a per-step overhead)."""
    steps = tuple((crop, batch, overhead + batch * crop * crop / pixels_per_second)
                  for crop, batch in ((256, 8), (256, 2)))
    return Speed(device="cpu", steps=steps,
                 infer_pixels_per_second=infer_factor * pixels_per_second)


# ---------------------------------------------------------------- pure rules

def test_membrane_like_data_without_a_budget_trains_until_the_curve_plateaus():
    """No budget: the learning curve ends the run, at most OPEN_FACTOR times the steps the
    data needs; validation and warm-up are planned over what the data needs."""
    fp = fingerprint(22, (512, 512))
    plan = make_plan(fp, {}, "cpu")
    assert plan.crop_size == 256 and plan.crop_size % 8 == 0
    needed = planning.needed_steps(fp, 256, plan.batch_size)
    assert plan.batch_size == 4 and needed >= planning.MIN_STEPS
    assert plan.steps == curve.OPEN_FACTOR * needed and plan.scheduler == "wsd"
    assert plan.val_every * planning.VALIDATIONS >= needed > plan.val_every
    assert plan.warmup_steps == round(planning.WARMUP_SHARE * needed)
    assert set(plan.sources.values()) == {"auto"} and plan.time_budget is None
    assert "until val mIoU plateaus" in "\n".join(planning.table_lines(plan))
    fixed = make_plan(fp, {}, "cpu", base=planning.Plan(plateau_gain=0.0))  # the rule off
    assert fixed.steps == needed


def test_tiny_images_get_a_crop_that_fits_and_a_larger_batch():
    plan = make_plan(fingerprint(20, (36, 40)), {}, "cpu")
    assert plan.crop_size == 32  # a multiple of 8, never larger than the images
    assert plan.batch_size == 20  # enough pixels a step, at most the train images
    assert plan.steps >= planning.MIN_STEPS


def test_odd_sizes_round_the_crop_down_to_the_pooling_grid():
    plan = make_plan(fingerprint(50, (37, 53)), {}, "cpu")
    assert plan.crop_size == 32


def test_gpu_takes_larger_crops_than_cpu():
    assert make_plan(fingerprint(100, (1024, 1024)), {}, "cuda").crop_size == 512
    assert make_plan(fingerprint(100, (1024, 1024)), {}, "cpu").crop_size == 256


def test_huge_datasets_need_more_steps_than_small_ones():
    off = planning.Plan(plateau_gain=0.0)  # the length the data needs, not the plateau's cap
    small = make_plan(fingerprint(22, (512, 512)), {}, "cpu", base=off)
    huge = make_plan(fingerprint(3000, (4000, 3000)), {}, "cpu", base=off)
    assert huge.steps > 10 * small.steps  # MIN_PASSES passes over their pixels
    assert huge.steps <= planning.MAX_STEPS


def test_mixed_sizes_fit_the_crop_to_all_but_the_smallest_images():
    sizes = ((40, 40, 1), (300, 400, 10), (600, 800, 9))  # 1 of 20 images is tiny
    assert make_plan(fingerprint(sizes=sizes), {}, "cpu").crop_size == 256
    sizes = ((100, 120, 10), (600, 800, 10))  # half of the images are small
    assert make_plan(fingerprint(sizes=sizes), {}, "cpu").crop_size == 96


def test_the_loss_is_ce_plus_dice_for_balanced_and_rare_classes_alike():
    balanced = make_plan(fingerprint(shares=(0.78, 0.22)), {}, "cpu")
    imbalanced = make_plan(fingerprint(shares=(0.95, 0.04, 0.01)), {}, "cpu")
    assert balanced.loss == imbalanced.loss == "ce+dice"
    assert (balanced.class_weights, balanced.sources["loss"]) == ("none", "auto")
    assert make_plan(fingerprint(), {"loss": "ce"}, "cpu").loss == "ce"


def test_the_learning_rate_follows_the_global_batch():
    one = make_plan(fingerprint(200, (512, 512)), {}, "cpu")
    two = make_plan(fingerprint(200, (512, 512)), {}, "cpu", world_size=2)
    assert two.batch_size == 2 and two.lr == pytest.approx(one.lr)  # the same global batch
    assert make_plan(fingerprint(), {"batch_size": 16}, "cpu").lr == pytest.approx(one.lr * 2)


def test_explicit_flags_always_win_and_are_marked():
    flags = {"crop_size": 128, "batch_size": 3, "steps": 50, "lr": 0.01, "loss": "dice",
             "class_weights": "median-freq", "val_every": 7}
    plan = make_plan(fingerprint(22, (512, 512)), flags, "cpu", cpu_speed(), 600)
    assert (plan.crop_size, plan.batch_size, plan.steps, plan.lr, plan.loss,
            plan.class_weights, plan.val_every) == (128, 3, 50, 0.01, "dice", "median-freq", 7)
    assert all(plan.sources[name] == "flag" for name in flags)
    assert plan.sources["warmup_steps"] == "auto" and plan.time_budget is None


def test_epochs_set_the_length_and_validate_every_epoch():
    plan = make_plan(fingerprint(22, (512, 512)), {"epochs": 3, "batch_size": 4}, "cpu",
                     cpu_speed(), 600)
    assert plan.steps == 3 * 5 and plan.val_every == 5 and plan.time_budget is None
    assert plan.sources["steps"] == "flag"


def test_a_budget_shrinks_the_batch_first_then_trains_all_it_affords():
    """The largest batch that affords what the data needs, trained for the whole budget (on an
    H200 the plan stopped at what the data needs: 1246 steps in 56 s of a 2-minute budget)."""
    fp = fingerprint(22, (512, 512))
    free = make_plan(fp, {}, "cpu")
    plan = make_plan(fp, {}, "cpu", cpu_speed(), default_budget=600)
    assert plan.crop_size == 256 and plan.batch_size < free.batch_size
    needed = planning.needed_steps(fp, 256, plan.batch_size)
    usable = planning.usable_seconds(fp, cpu_speed(), 600)
    assert plan.steps == int(usable / cpu_speed().step_seconds(256, plan.batch_size)) >= needed
    assert plan.time_budget == 600 and plan.sources["time_budget"] == "auto"
    seconds = plan.steps * cpu_speed().step_seconds(plan.crop_size, plan.batch_size)
    assert seconds < 600
    assert plan.scheduler == "wsd"  # the budget affords more than needed: a plateau may end it


def test_a_tight_budget_trains_all_it_affords_with_a_smaller_crop():
    fp = fingerprint(22, (512, 512))
    plan = make_plan(fp, {"time_budget": 90}, "cpu", cpu_speed())
    assert plan.batch_size == planning.MIN_BATCH and plan.crop_size < 256
    assert plan.steps < planning.MIN_STEPS
    assert plan.steps * cpu_speed().step_seconds(plan.crop_size, 2) < 90
    assert plan.sources["time_budget"] == "flag"
    assert any("all the budget affords" in note for note in plan.notes)
    # The budget ends the run before the data's needs: cosine decays over the whole run.
    assert plan.scheduler == "cosine" and plan.sources["scheduler"] == "auto"
    assert make_plan(fp, {"time_budget": 90, "scheduler": "wsd"}, "cpu",
                     cpu_speed()).scheduler == "wsd"


def test_time_already_spent_comes_out_of_the_budget():
    fp = fingerprint(22, (512, 512))
    fresh = make_plan(fp, {"time_budget": 240}, "cpu", cpu_speed())
    late = make_plan(fp, {"time_budget": 240}, "cpu", cpu_speed(), elapsed=60)
    assert late.steps < fresh.steps


def test_a_large_val_split_is_subsampled_for_intermediate_checks():
    fp = dataclasses.replace(fingerprint(22, (512, 512)), val_images=400,
                             val_pixels=400 * 512 * 512)
    plan = make_plan(fp, {}, "cpu", cpu_speed(), default_budget=600)
    assert plan.val_images is not None and 1 <= plan.val_images < 400
    checks = plan.steps / plan.val_every
    share = checks * plan.measured["val_seconds"] * plan.val_images / 400 / (
        plan.steps * plan.measured["step_seconds"])
    assert share <= planning.VAL_SHARE + 1e-9


def test_replanning_moves_the_end_to_fit_the_time_left():
    plan = make_plan(fingerprint(22, (512, 512)), {}, "cpu", cpu_speed(), default_budget=600)
    step = plan.measured["step_seconds"]
    assert planning.replan_steps(plan, 100, (plan.steps - 100) * step * 1.02, step, 0.0) == \
        plan.steps  # on time: within 3%, the end stays
    later = planning.replan_steps(plan, 100, (plan.steps - 100) * step * 1.5, step, 0.0)
    assert later > plan.steps  # a faster machine trains longer: the budget, not a pass count
    slower = planning.replan_steps(plan, 100, (plan.steps - 100) * step / 2, step, 0.0)
    assert 100 < slower < plan.steps
    assert planning.replan_steps(plan, 100, 0.0, step, 0.0) == 101


def test_the_plan_round_trips_through_plain_data():
    plan = make_plan(fingerprint(), {"lr": 0.01}, "cpu", cpu_speed(), default_budget=300)
    data = json.loads(json.dumps(plan.to_dict()))
    assert planning.Plan.from_dict(data) == plan


def test_the_table_marks_every_value_auto_or_flag():
    lines = planning.table_lines(make_plan(fingerprint(), {"batch_size": 4}, "cpu"))
    rows = {line.split("  ")[1]: line for line in lines[1:10]}
    assert rows["batch size"].rstrip().endswith("flag")
    assert rows["crop size"].rstrip().endswith("auto") and len(rows) == 9


def test_the_fingerprint_comes_from_the_scan(tmp_path):
    root = write_tiny_dataset(tmp_path, counts=(("train", 5), ("val", 2)), size=24)
    fp = planning.fingerprint(scan_dataset(root))
    assert (fp.train_images, fp.val_images, fp.short_side) == (5, 2, 24)
    assert fp.train_pixels == 5 * 24 * 24 and fp.val_pixels == 2 * 24 * 24
    assert sum(fp.class_shares) == pytest.approx(1) and fp.void_share == 0
    assert planning.fingerprint(scan_dataset(root), image_size=16).sizes == ((16, 16, 5),)


def test_measured_speed_is_real_steps_and_leaves_the_model_and_rng_alone():
    model = SegNet(num_classes=3)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    runtime = Runtime(planning.Plan(device="cpu", amp="off"))
    torch.manual_seed(5)
    expected = torch.rand(1)
    torch.manual_seed(5)
    info = {"num_classes": 3, "class_pixels": [1, 1, 1], "class_image_pixels": [1, 1, 1]}
    speed = timing.measure_speed(model, planning.Plan(device="cpu", amp="off"), runtime,
                                 [(16, 2), (16, 4)], (20, 24), info, repeats=1)
    assert torch.equal(torch.rand(1), expected)
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    assert [(crop, batch) for crop, batch, _ in speed.steps] == [(16, 2), (16, 4)]
    assert all(seconds > 0 for _, _, seconds in speed.steps)
    assert speed.infer_pixels_per_second > 0


# ---------------------------------------------------------------- train.py

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("data"), counts=(("train", 6),
                                                                       ("val", 2)), size=24)


def run_args(data, out, *extra):
    return train.get_args_parser().parse_args(
        ["--data", str(data), "--out", str(out), "--workers", "0", "--log-every", "1", *extra])


def test_plan_only_prints_the_plan_and_writes_nothing(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(run_args(tiny, out, "--plan-only", "--time-budget", "2",
                               "--batch-size", "2")) == 0
    printed = capsys.readouterr().out
    assert "plan:" in printed and "crop size       24 px" in printed
    assert "batch size      2" in printed and "flag" in printed and "measured:" in printed
    assert not out.exists()


def test_a_short_budgeted_run_ends_in_time_and_keeps_its_plan_on_resume(tiny, tmp_path):
    out = tmp_path / "run"
    start = time.monotonic()
    # 36 s: enough for the 100 steps a useful run needs at the smallest crop on a busy 2-core CPU
    assert train.main(run_args(tiny, out, "--time-budget", "0.6", "--amp", "off")) == 0
    assert time.monotonic() - start < 36 + 30  # generous: the mechanism, not the speed
    config = json.loads((out / "config.json").read_text())
    checkpoint = torch.load(out / "last.pt", weights_only=True)
    assert config["plan"]["time_budget"] == 36 and config["plan"]["sources"]["steps"] == "auto"
    assert checkpoint["global_step"] == checkpoint["plan"]["steps"]
    rows = (out / "metrics.csv").read_text().splitlines()[1:]
    assert len(rows) == -(-checkpoint["global_step"] // checkpoint["plan"]["val_every"])
    # Resumed, and extended: the rest of the plan stays as it was.
    assert train.main(run_args(tiny, out, "--resume", str(out), "--amp", "off", "--steps",
                               str(checkpoint["global_step"] + 2))) == 0
    resumed = torch.load(out / "last.pt", weights_only=True)
    assert resumed["global_step"] == checkpoint["global_step"] + 2
    for key in ("crop_size", "batch_size", "lr", "loss", "val_every", "warmup_steps"):
        assert resumed["plan"][key] == checkpoint["plan"][key], key


def test_a_checkpoint_written_before_plans_resumes_with_its_own_recipe(tiny, tmp_path):
    out = tmp_path / "run"
    assert train.main(run_args(tiny, out, "--epochs", "1", "--crop-size", "16", "--batch-size",
                               "2", "--loss", "ce", "--lr", "0.004")) == 0
    checkpoint = torch.load(out / "last.pt", weights_only=True)
    for key in ("plan", "best_step", "seconds"):  # the keys plans added
        del checkpoint[key]
    torch.save(checkpoint, out / "last.pt")
    assert train.main(run_args(tiny, out, "--resume", str(out), "--epochs", "2")) == 0
    resumed = torch.load(out / "last.pt", weights_only=True)
    plan = resumed["plan"]
    assert (plan["crop_size"], plan["batch_size"], plan["loss"], plan["lr"]) == (16, 2, "ce",
                                                                                 0.004)
    assert plan["time_budget"] is None and resumed["epoch"] == 2


def test_a_resumed_run_refuses_a_different_planned_value(tiny, tmp_path):
    """The loss cannot change on --resume; the batch and crop can (after an out-of-memory:
    tests/training/test_memory.py)."""
    out = tmp_path / "run"
    assert train.main(run_args(tiny, out, "--steps", "2", "--loss", "ce")) == 0
    with pytest.raises(SystemExit, match="--loss ce, not dice"):
        train.main(run_args(tiny, out, "--steps", "4", "--loss", "dice", "--resume", str(out)))


def test_health_warnings_for_a_model_that_predicts_one_class(tiny, tmp_path, monkeypatch):
    """A model that calls every pixel class 0: every validation and the summary say so."""
    original = Runtime.inference_form

    def one_class(self, model):
        folded = original(self, model)
        with torch.no_grad():
            folded.classifier.weight.zero_()
            folded.classifier.bias.copy_(torch.tensor([5.0, 0.0, 0.0]))
        return folded

    monkeypatch.setattr(Runtime, "inference_form", one_class)
    out = tmp_path / "run"
    assert train.main(run_args(tiny, out, "--steps", "2", "--batch-size", "2",
                               "--crop-size", "16")) == 0
    log = (out / "train.log").read_text()
    assert "warning: class 'class_1'" in log and "is never predicted" in log
    assert "predicts 'class_0' for 100.0% of the pixels" in log
    assert "the model is not useful yet" in log
    # Advice that holds: more of what the run set by hand, labels for classes in few images,
    # never median-frequency weights (measured worse, docs/plan.md).
    assert "try: more --steps" in log and "median-freq" not in log
    assert "labelling more images of 'class_1' (it is in 6 train images)" in log


def gpu_speed(free_gib, gib_per_megapixel=2.0, weights_gib=1.0):
    """A GPU whose training step needs weights_gib plus gib_per_megapixel a million pixels."""
    def need(crop, batch):
        return (weights_gib + gib_per_megapixel * batch * crop * crop / 1e6) * 2**30
    candidates = ((512, 2), (168, 2))
    return Speed(device="cuda", steps=tuple((c, b, 1e-3 * b * c * c / 1e5) for c, b in candidates),
                 infer_pixels_per_second=1e8,
                 memory=tuple((c, b, need(c, b)) for c, b in candidates),
                 free_bytes=free_gib * 2**30)


def test_the_plan_sizes_the_batch_then_the_crop_to_the_free_device_memory():
    fp = fingerprint(600, (512, 512))
    roomy = make_plan(fp, {}, "cuda", gpu_speed(free_gib=80))
    assert (roomy.crop_size, roomy.batch_size) == (512, 8)
    tight = make_plan(fp, {}, "cuda", gpu_speed(free_gib=3))  # batch 8 needs 5.2 GiB
    speed = gpu_speed(free_gib=3)
    assert tight.crop_size == 512 and tight.batch_size == 2
    assert speed.fits(512, 2) and not speed.fits(512, 4)
    assert any("would need 5.2 GiB of the 3.0 GiB free" in note for note in tight.notes)
    tiny = make_plan(fp, {}, "cuda", gpu_speed(free_gib=1.5))  # only a smaller crop fits
    assert tiny.batch_size == 2 and tiny.crop_size < 512
    assert gpu_speed(free_gib=1.5).fits(tiny.crop_size, 2)
    # An explicit --batch-size stays, fitting or not (an out-of-memory then names what fits).
    assert make_plan(fp, {"batch_size": 8}, "cuda", gpu_speed(free_gib=3)).batch_size == 8
    # Off CUDA nothing is measured and nothing limits.
    assert cpu_speed().fits(4096, 64) and cpu_speed().step_bytes(256, 8) == 0.0


def test_compile_is_planned_on_cuda_where_the_run_repays_it(monkeypatch):
    """On CUDA with triton, a fixed crop and enough expected training: torch.compile, with a
    note; a short run, whole images, the CPU or no triton: eager. The flags always win."""
    monkeypatch.setattr(speedplan.importlib.util, "find_spec",
                        lambda name: object() if name == "triton" else None)
    fp = fingerprint(6000, (512, 512))  # 10 passes: 7500 steps of 0.021 s
    long_run = make_plan(fp, {}, "cuda", gpu_speed(free_gib=80))  # until the curve plateaus
    assert long_run.compile and long_run.sources["compile"] == "auto"
    assert any(note.startswith("torch.compile: about") for note in long_run.notes)
    assert "torch.compile" in "\n".join(planning.table_lines(long_run))
    repay = speedplan.COMPILE_MARGIN * speedplan.COMPILE_SECONDS / (
        1 - 1 / speedplan.COMPILE_SPEEDUP)
    assert not speedplan.plan_compile({}, planning.Plan(), "cuda", 256, 0.9 * repay)
    assert speedplan.plan_compile({}, planning.Plan(), "cuda", 256, 1.1 * repay)
    assert not speedplan.plan_compile({}, planning.Plan(), "cuda", 0, 100 * repay)  # sizes vary
    assert not speedplan.plan_compile({}, planning.Plan(), "cpu", 256, 100 * repay)
    assert not make_plan(fp, {"steps": 3}, "cuda", gpu_speed(free_gib=80)).compile
    off = make_plan(fp, {"compile": False}, "cuda", gpu_speed(free_gib=80))
    assert not off.compile and off.sources["compile"] == "flag"
    assert make_plan(fp, {"compile": True}, "cpu").compile
    monkeypatch.setattr(speedplan.importlib.util, "find_spec", lambda name: None)
    assert not make_plan(fp, {}, "cuda", gpu_speed(free_gib=80)).compile
    assert not make_plan(fp, {}, "cpu").compile
