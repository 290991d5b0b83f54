"""The time budget of a cross-validation (training/foldclock.py): one deadline for the command,
shares of the time left, fold 0's budget less the priced scoring, later folds' deadlines less
their scoring at fold 0's measured rate, and the busiest process's folds."""
import argparse

import pytest

from segnet.training import foldclock


def test_each_fold_gets_a_share_of_the_time_left_of_one_deadline():
    clock = foldclock.job_clock(started=1000.0, seconds=600.0, folds=5, processes=1)
    assert clock.deadline == 1600.0 and clock.slots == 5
    assert clock.slot_seconds(1000.0, 5) == pytest.approx((600 - foldclock.REPORT_SECONDS) / 5)
    # a planning pass and a slow fold 0 leave less: the later folds share what is left
    assert clock.slot_seconds(1250.0, 4) == pytest.approx((350 - foldclock.REPORT_SECONDS) / 4)
    assert clock.slot_seconds(1700.0, 1) == 0.0  # past the deadline: nothing, never negative


def test_fold_0_budget_leaves_its_scoring_and_later_deadlines_their_measured_scoring():
    assert foldclock.fold_zero_budget(119.0, scoring_guess=12.0) == 107.0
    measured = {"seconds": 16.0, "images_count": 4}  # fold 0: 4 images scored in 16 s
    assert foldclock.scoring_seconds(measured, 5) == pytest.approx(20.0)
    assert foldclock.fold_deadline(2000.0, 119.0, 20.0) == pytest.approx(2099.0)


@pytest.mark.parametrize("folds, processes, slots", [(5, 1, 5), (5, 2, 3), (4, 2, 3),
                                                     (3, 3, 2)])
def test_the_busiest_process_waits_for_fold_0_under_a_budget(folds, processes, slots):
    assert foldclock.fold_slots(folds, processes) == slots
    assert foldclock.fold_slots(folds, processes, budgeted=False) == -(-folds // processes)
    assert foldclock.folds_of(1, 2, 5) == [1, 3]


def test_the_lines_say_how_the_budget_is_divided():
    clock = foldclock.job_clock(0.0, 600.0, 5, 1)
    line = foldclock.division_line(clock, 5, 1)
    assert "the time budget of 10.0 min covers the command: 5 fold(s)" in line
    assert "about 1.98 min each" in line and "fold 0 measures the length" in line
    assert "needs about 5 times the --time-budget" in foldclock.budget_hint(clock, 5)
    assert "no time budget" in foldclock.division_line(
        foldclock.job_clock(0.0, None, 5, 1), 5, 1)
    summary = foldclock.time_summary(clock, 590.0)
    assert summary == {"budget_seconds": 600.0, "seconds": 590.0, "slots": 5,
                       "within_budget": True}


@pytest.mark.parametrize("flags, seconds", [({"time_budget": 10.0}, 600.0),
                                            ({"time_budget": 0}, None),
                                            ({"time_budget": 10.0, "steps": 5}, None)])
def test_job_budget_is_the_flag_in_seconds_or_none(flags, seconds):
    args = argparse.Namespace(**dict({"steps": None, "epochs": None, "device": "cpu"}, **flags))
    assert foldclock.job_budget(args) == seconds
