"""The run's length from its learning curve (segnet/plan/curve.py): the plateau rule, the
warm-up / stable / decay schedule, and a real run that ends on a plateau and says why."""
import csv
import math

import pytest
import torch

import train
from helpers import write_tiny_dataset
from segnet.plan import curve
from segnet.plan.plan import Plan
from segnet.training import engine
from segnet.training.ending import stop_reason


def rising(steps, slope=0.05, every=100):
    """A curve that keeps rising like the log of the steps (no plateau)."""
    return [[step, 0.3 + slope * math.log(step)] for step in range(every, steps + 1, every)]


def test_a_log_rising_curve_has_not_plateaued_and_a_flat_one_has():
    assert not curve.plateaued(rising(4000))
    flat = rising(2000) + [[step, 0.3 + 0.05 * math.log(2000)] for step in range(2100, 3100, 100)]
    assert curve.plateaued(flat)
    # ... unless the gain asked for is 0 (the rule off) or smaller than what the tail gained
    assert not curve.plateaued(flat, gain=0)
    assert not curve.plateaued(rising(4000, slope=0.5), gain=0.1)


def test_the_window_is_relative_and_needs_enough_checks():
    # Too few validations to tell: never a plateau, however flat.
    assert not curve.plateaued([[100, 0.5]] * 5)
    assert curve.plateaued([[step, 0.5] for step in range(100, 700, 100)])
    # The last 25% of 10000 steps is 2500 steps: a gain 3000 steps ago does not count...
    late = [[step, 0.5] for step in range(1000, 6001, 1000)] + [[7000, 0.6], [8000, 0.6],
                                                                 [9000, 0.6], [10000, 0.6]]
    assert curve.plateaued(late)
    # ... a gain within it does.
    late[-1][1] = 0.61
    assert not curve.plateaued(late)


def test_wsd_warms_up_holds_then_decays_to_zero():
    factors = [curve.wsd_factor(step, 10, 100) for step in range(101)]
    assert factors[0] == pytest.approx(1 / 11) and factors[9] == pytest.approx(10 / 11)
    assert factors[10:80] == [1.0] * 70  # constant until the last 20%
    assert factors[80] == 1.0 and factors[90] == pytest.approx(0.5) and factors[100] == 0.0
    assert all(a >= b for a, b in zip(factors[80:], factors[81:]))
    # A plateau at step 40 moves the decay there, over 20% of a run ending at 50.
    assert curve.decay_end(40, 1000) == 50 and curve.decay_end(40, 45) == 45
    assert curve.wsd_factor(39, 10, 50, decay_start=40) == 1.0
    assert curve.wsd_factor(45, 10, 50, decay_start=40) == pytest.approx(0.5)


def test_the_scheduler_follows_the_plan_it_reads():
    """engine's wsd reads plan.steps and plan.decay_start at every step: a budget may move the
    end, a plateau the start of the decay."""
    class Config:
        scheduler, warmup_steps, steps, decay_start, gamma = "wsd", 2, 100, None, 0.1

    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    scheduler, _ = engine.build_scheduler(Config, optimizer, 10)
    rates = []
    for step in range(60):
        if step == 30:
            Config.decay_start, Config.steps = 30, 40  # a plateau at step 30
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[5] == rates[29] == 1.0
    assert rates[31] < 1.0 and rates[35] == pytest.approx(0.5) and rates[40] == 0.0


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("data"))


def test_a_run_without_a_budget_ends_on_a_plateau_and_says_why(tiny_data, tmp_path):
    """--time-budget none: no fixed length. A gain asked for that the tiny set cannot give
    (0.9) makes its curve plateau at the sixth validation (step 12): the decay then takes a
    last 20% of the run (to step 15) and the run ends, saying so."""
    out = tmp_path / "run"
    args = train.get_args_parser().parse_args([
        "--data", str(tiny_data), "--out", str(out), "--batch-size", "2", "--crop-size", "16",
        "--workers", "0", "--time-budget", "none", "--val-every", "2", "--plateau-gain", "0.9"])
    assert train.main(args) == 0
    log = (out / "train.log").read_text()
    assert "plateau at step 12" in log and "decays over steps 12-15" in log
    assert "stopped at step 15: val mIoU stopped improving" in log
    with open(out / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8  # validations at 2, 4, ..., 14 and at the last step, 15
    rates = [float(row["lr"]) for row in rows]
    assert rates[:6] == sorted(rates[:6]) and rates[7] < rates[6] < rates[5]  # then the decay
    checkpoint = torch.load(out / "last.pt", weights_only=True)
    assert checkpoint["ending"] == "plateau" and checkpoint["plan"]["decay_start"] == 12
    assert [step for step, _ in checkpoint["curve"]] == [2, 4, 6, 8, 10, 12, 14, 15]


def test_a_bad_plateau_gain_or_budget_stops_with_one_line(tiny_data, tmp_path, capsys):
    parser = train.get_args_parser()
    for flags, expected in ((["--plateau-gain", "1.5"], "--plateau-gain must be"),
                            (["--time-budget", "-3"], "--time-budget must be")):
        args = parser.parse_args(["--data", str(tiny_data), "--out", str(tmp_path), *flags])
        with pytest.raises(SystemExit) as stop:
            train.validate_args(args)
        assert expected in str(stop.value) and "\n" not in str(stop.value).strip()
    with pytest.raises(SystemExit):
        parser.parse_args(["--time-budget", "soon"])
    assert "expected minutes or 'none'" in capsys.readouterr().err


def test_a_budget_end_is_told_with_the_schedule_that_decayed():
    state = {"ending": None, "stale": 0}
    wsd = Plan(time_budget=600.0, scheduler="wsd")
    assert stop_reason(wsd, state) == ("the time budget's end (its last 20% decayed the "
                                       "learning rate)")
    cosine = Plan(time_budget=600.0, scheduler="cosine")  # planned where the budget binds
    assert stop_reason(cosine, state) == "the time budget's end (the cosine schedule)"
    assert "step cap" in stop_reason(Plan(time_budget=None, scheduler="wsd"), state)
