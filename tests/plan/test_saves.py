"""When last.pt is written (saves.py): the planned interval from the step time, the save points
between validations, and a run that saves there without adding metrics rows."""
import csv

import pytest
import torch

import train
from helpers import write_tiny_dataset
from segnet.plan import saves
from segnet.plan.plan import Fingerprint, Plan, Speed, make_plan
from segnet.plan.plantable import table_lines
from segnet.training import trainer


def test_the_interval_is_about_two_minutes_of_work_spread_evenly_between_validations():
    # 1000 steps between validations at 0.5 s a step: 500 s, so 5 saves, one every 200 steps.
    assert saves.plan_save_steps(1000, 0.5) == 200
    assert saves.plan_save_steps(1000, 0.5) * 0.5 <= saves.SAVE_SECONDS
    assert saves.plan_save_steps(100, 0.5) is None  # validations every 50 s already save
    assert saves.plan_save_steps(1000, 0.0) is None  # no step time, no plan
    assert saves.plan_save_steps(7, 60.0) == 2  # slow steps: every 2 steps, evenly (2, 4, 6)


def test_save_points_depend_on_the_step_alone():
    plan = Plan(steps=30, val_every=10, save_steps=4)
    due = [step for step in range(1, 31) if saves.step_save_due(plan, step)]
    assert due == [4, 8, 14, 18, 24, 28]  # never at a validation, which saves on its own
    assert [saves.next_save(plan, step) for step in (0, 3, 4, 8, 9, 10)] == [4, 4, 8, 10, 10, 14]
    assert saves.next_save(Plan(val_every=10), 3) == 10  # no interval: the next validation
    assert not any(saves.step_save_due(Plan(val_every=10), step) for step in range(30))


def fingerprint(images, side=512):
    return Fingerprint(train_images=images, val_images=4, sizes=((side, side, images),),
                       val_pixels=4 * side * side, val_size=(side, side),
                       class_shares=(0.5, 0.5), void_share=0.0)


def speed(seconds_per_megapixel):
    """A CPU that trains at a fixed rate per pixel of a step."""
    return Speed(device="cpu", steps=tuple(
        (crop, batch, seconds_per_megapixel * batch * crop * crop / 1e6)
        for crop, batch in ((256, 8), (256, 2))), infer_pixels_per_second=4e6)


def test_the_plan_sets_the_interval_from_the_measured_step_time_and_prints_it():
    slow = speed(4.0)
    plan = make_plan(fingerprint(400), {"time_budget": 4 * 3600}, "cpu", slow)
    step_seconds = plan.measured["step_seconds"]
    assert plan.val_every * step_seconds > saves.SAVE_SECONDS  # the case this is for
    assert plan.save_steps and plan.save_steps * step_seconds <= saves.SAVE_SECONDS
    assert plan.sources["save_steps"] == "auto"
    row = next(line for line in table_lines(plan) if "save last.pt" in line)
    assert f"every {plan.save_steps} steps" in row and row.endswith("auto")

    quick = make_plan(fingerprint(22), {}, "cpu", speed(1.0), default_budget=600)
    assert quick.save_steps is None  # validations come more often than every 2 minutes
    flagged = make_plan(fingerprint(400), {"save_steps": 7}, "cpu", slow, 4 * 3600)
    assert (flagged.save_steps, flagged.sources["save_steps"]) == (7, "flag")
    epochs = make_plan(fingerprint(400), {"time_budget": 4 * 3600}, "cpu", slow,
                       base=Plan(save_every=2))
    assert (epochs.save_steps, epochs.sources["save_steps"]) == (None, "flag")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("data"))


def run_args(data_root, out, *extra):
    return train.get_args_parser().parse_args([
        "--data", str(data_root), "--out", str(out), "--batch-size", "2", "--crop-size", "16",
        "--workers", "0", "--log-every", "1", "--deterministic", *extra])


def recorded_saves(monkeypatch):
    saved = []
    original = trainer.Run.save

    def save(self, name, state):
        saved.append((name, state["global_step"]))
        return original(self, name, state)

    monkeypatch.setattr(trainer.Run, "save", save)
    return saved


def test_a_run_saves_between_validations_without_adding_rows(tiny_data, tmp_path,
                                                             monkeypatch):
    saved = recorded_saves(monkeypatch)
    out = tmp_path / "run"
    assert train.main(run_args(tiny_data, out, "--steps", "12", "--val-every", "6",
                               "--save-steps", "4")) == 0
    last = [step for name, step in saved if name == "last.pt"]
    assert last == [4, 6, 10, 12]  # 4 and 10 between validations, 6 and 12 with them
    with open(out / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and all(row["miou"] for row in rows)  # a row a validation, no more
    assert "save last.pt    every 4 steps, at validations" in (out / "train.log").read_text()


def test_a_run_without_a_measured_speed_times_its_steps_for_the_interval(tiny_data, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setattr(saves, "SAVE_SECONDS", 1e-6)  # any step is slower: save every step
    monkeypatch.setattr(saves, "PROBE_STEPS", 2)
    saved = recorded_saves(monkeypatch)
    out = tmp_path / "run"
    assert train.main(run_args(tiny_data, out, "--steps", "10", "--val-every", "10")) == 0
    log = (out / "train.log").read_text()
    assert "save last.pt: every 1 steps" in log
    last = [step for name, step in saved if name == "last.pt"]
    # Steps 1-3 warm up and 4-5 are timed; from then on every step saves.
    assert last == [5, 6, 7, 8, 9, 10]
    plan = torch.load(out / "last.pt", weights_only=True)["plan"]
    assert plan["save_steps"] == 1 and plan["measured"]["save_step_seconds"] > 0


def test_save_steps_given_on_resume_applies_from_there(tiny_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert train.main(run_args(tiny_data, out, "--steps", "4", "--val-every", "4")) == 0
    saved = recorded_saves(monkeypatch)
    assert train.main(run_args(tiny_data, out, "--steps", "12", "--save-steps", "2",
                               "--resume", str(out))) == 0
    assert [step for name, step in saved if name == "last.pt"] == [6, 8, 10, 12]
    plan = torch.load(out / "last.pt", weights_only=True)["plan"]
    assert (plan["save_steps"], plan["sources"]["save_steps"]) == (2, "flag")
