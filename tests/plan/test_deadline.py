"""A run of fixed length under a deadline (plan/deadline.py), at fake measured seconds a step and
a validation: the length is kept while it fits, validations go first, steps only after."""
import pytest

from segnet.plan import deadline, plan as planning

STEP, VAL, FINAL = 0.3, 10.0, 10.0  # 300 steps of 0.3 s: 90 s; nine checks of 10 s: 90 s


def test_a_run_that_fits_keeps_its_length_and_validations():
    assert deadline.checks_left(0, 300, 30) == 9  # steps 30 ... 270; 300 is the final one
    assert deadline.seconds_needed(0, 300, 30, STEP, VAL, FINAL) == pytest.approx(190.0)
    assert deadline.fit_deadline(0, 300, 30, 200.0, STEP, VAL, FINAL) == (30, 300)


def test_validations_go_first_and_keep_to_the_planned_checks_steps():
    every, steps = deadline.fit_deadline(0, 300, 30, 150.0, STEP, VAL, FINAL)
    assert steps == 300 and every == 60  # four checks (60 ... 240): 90 + 40 + 10 = 140 s
    every, steps = deadline.fit_deadline(150, 300, 30, 70.0, STEP, VAL, FINAL)
    assert steps == 300 and every == 120 and deadline.checks_left(150, 300, every) == 1
    every, steps = deadline.fit_deadline(150, 300, 30, 60.0, STEP, VAL, FINAL)
    assert (every, steps) == (300, 300)  # the final validation alone: 45 + 10 s


def test_steps_are_cut_only_when_the_steps_alone_overrun():
    every, steps = deadline.fit_deadline(0, 300, 30, 80.0, STEP, VAL, FINAL)
    assert every == 300 and steps == int((80 * (1 - deadline.MARGIN) - FINAL) / STEP)
    assert deadline.fit_deadline(299, 300, 30, 0.0, STEP, VAL, FINAL)[1] == 300  # one more
    assert deadline.fit_deadline(10, 300, 30, 1e6, STEP, VAL, FINAL) == (30, 300)  # never more


def test_fold_0s_length_is_planned_with_its_measured_validation_time():
    """Fold 0 re-plans as a plain run (planning.replan_steps): at a measured 10 s a
    validation every 30 steps it buys far fewer steps of 0.3 s than the steps alone."""
    plan = planning.Plan(steps=303, val_every=30, measured={"check_seconds": 4.0})
    without = planning.replan_steps(plan, 0, 114.0, STEP, 0.0)
    steps = planning.replan_steps(plan, 0, 114.0, STEP, VAL)
    per_step = STEP + VAL / 30
    assert steps == int((114 * (1 - planning.BUDGET_MARGIN) - 2 * VAL) / per_step)
    assert steps < 0.6 * without
