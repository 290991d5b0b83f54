"""How a run ends (training/ending.py): a run of fixed length with a deadline validates less
often first and ends early only when its steps alone overrun, saying so, and takes its given
length back when it fits again; without a deadline, or under a time budget, it is left alone."""
import time
from types import SimpleNamespace

from segnet.plan import plan as planning
from segnet.training import ending, engine


def fixed_run(seconds_left, steps=300, val_every=30, budget=None):
    plan = planning.Plan(steps=steps, val_every=val_every, time_budget=budget,
                         sources={"steps": "flag"}, measured={"check_seconds": 10.0})
    lines = []
    run = SimpleNamespace(plan=plan, deadline=time.monotonic() + seconds_left,
                          step_seconds=0.3, val_seconds=10.0, log=lines.append,
                          run_args={"steps": steps})
    return run, lines


def test_a_deadline_drops_validations_before_steps():
    run, lines = fixed_run(150.0)
    state = engine.new_state()
    ending.hold_deadline(run, state)
    assert (run.plan.val_every, run.plan.steps) == (60, 300)
    assert "validating every 60 steps, not 30" in lines[0] and state["ending"] is None


def test_a_deadline_the_steps_alone_overrun_ends_the_run_early_and_says_why():
    run, lines = fixed_run(80.0)
    state = engine.new_state()
    ending.hold_deadline(run, state)
    assert run.plan.steps < 300 and run.plan.val_every >= run.plan.steps
    assert "300 -> " in lines[-1] and state["ending"] == "deadline"
    assert "deadline" in ending.stop_reason(run.plan, state)
    cut = run.plan.steps
    run.deadline = time.monotonic() + 200.0  # the machine sped up: the given length fits again
    ending.hold_deadline(run, state)
    assert run.plan.steps == 300 and state["ending"] is None and cut < 300
    assert "the 300 given fit again" in lines[-1]


def test_no_deadline_or_a_time_budget_leaves_the_run_alone():
    for run, _ in (fixed_run(10.0, budget=600.0), fixed_run(1e6)):
        ending.hold_deadline(run, engine.new_state())
        assert (run.plan.val_every, run.plan.steps) == (30, 300)
    run, _ = fixed_run(10.0)
    run.deadline = None
    ending.hold_deadline(run, engine.new_state())
    assert (run.plan.val_every, run.plan.steps) == (30, 300)
