"""How a run ends: the time budget's re-planned last step, a deadline that a run of fixed length
keeps (plan/deadline.py), the learning curve's plateau and its decay phase (plan/curve.py), why
the run stopped, and the closing lines with what to try for a weak model."""
import time

from model import IMAGENET
from segnet.plan import curve, deadline, plan as planning
from segnet.plan.dataplan import CLASS_SAMPLING
from segnet.runtime import broadcast_object

FEW_IMAGES = 20  # a weak class in fewer train images than this: advise labelling more


def replan(run, state):
    """Under a time budget: move the run's last step so that it ends on time, from the latest
    measured seconds a step and a validation (the schedule, which reads plan.steps, still
    completes). Rank 0 decides: every rank must stop at the same step."""
    plan = run.plan
    if (plan.time_budget is None or state["global_step"] >= plan.steps
            or state["ending"] == "plateau"):  # after a plateau the decay's end is fixed
        return
    left = run.started + plan.time_budget - time.monotonic()
    total = broadcast_object(planning.replan_steps(
        plan, state["global_step"], left, run.step_seconds, run.val_seconds))
    if abs(total - plan.steps) >= 0.05 * plan.steps:
        run.log(f"time budget: {plan.steps} -> {total} steps ({left:.0f} s left)")
    plan.steps = total
    start = curve.planned_decay_start(plan.steps)
    if plan.scheduler == "wsd" and plan.decay_start is None and state["global_step"] >= start:
        plan.decay_start, state["ending"] = start, "budget"  # held from here: the end may move
        run.log(f"decay phase: steps {start}-{plan.steps}, the time budget's last "
                f"{curve.DECAY_SHARE:.0%}")


def hold_deadline(run, state):
    """A run of fixed length with a deadline (run.deadline: a cross-validation fold's share of
    the job's time budget) keeps its length while it can end by then, at the latest measured
    seconds a step and a validation: it validates less often first (val_every doubled), and
    only when the steps alone overrun does it end earlier (plan.steps cut; the schedule, which
    reads plan.steps, still completes). A cut is undone, up to the length the run was given
    (its --steps), when the machine speeds up again. Rank 0 decides: every rank must stop at
    the same step."""
    plan = run.plan
    if run.deadline is None or plan.time_budget or state["global_step"] >= plan.steps:
        return
    given = max(run.run_args.get("steps") or plan.steps, plan.steps)
    left = run.deadline - time.monotonic()
    final = max(plan.measured.get("check_seconds", 0.0), run.val_seconds) * (
        2 if plan.val_images else 1)  # the whole split, and best.pt re-scored on it
    every, steps = broadcast_object(deadline.fit_deadline(
        state["global_step"], given, plan.val_every, left, run.step_seconds,
        run.val_seconds, final))
    if plan.steps < steps < given and steps - plan.steps <= 0.03 * given:
        steps = plan.steps  # a length that keeps moving helps nobody
    if every != plan.val_every:
        run.log(f"deadline ({left:.0f} s left): validating every {every} steps, not "
                f"{plan.val_every}" + (" (the final validation alone)" if every >= steps else ""))
    if steps != plan.steps:
        run.log(f"deadline ({left:.0f} s left): {plan.steps} -> {steps} steps"
                + (f", fewer than the {given} given: the steps alone would end past it"
                   if steps < given else f": the {given} given fit again"))
    state["ending"] = "deadline" if steps < given else None
    plan.val_every, plan.steps = every, steps


def check_plateau(run, state):
    """After a validation: when the learning curve has plateaued (curve.plateaued), start the
    decay phase now and end the run with it. Only where no flag fixes the length and the
    schedule can decay from any step (wsd). Every rank sees the same scores: all decide alike."""
    plan = run.plan
    if (plan.scheduler != "wsd" or plan.sources.get("steps") == "flag" or plan.dry_run
            or state["ending"] is not None
            or not curve.plateaued(state["curve"], plan.plateau_gain)):
        return
    step = state["global_step"]
    plan.decay_start, plan.steps = step, curve.decay_end(step, plan.steps)
    state["ending"] = "plateau"
    run.log(f"plateau at step {step}: val mIoU gained under {plan.plateau_gain:g} over the last "
            f"{curve.PLATEAU_WINDOW:.0%} of the steps (best {state['best_metric']:.4f}); the "
            f"learning rate decays over steps {step}-{plan.steps}, then the run ends")


def stop_reason(plan, state):
    """Why the run stopped where it did, in words (curve.STOP_REASONS)."""
    if state["ending"] == "plateau":
        return curve.stop_text("plateau", gain=plan.plateau_gain, plateau_step=plan.decay_start)
    if state["ending"] in ("early_stop", "deadline"):
        return curve.stop_text(state["ending"], stale=state["stale"])
    if plan.sources.get("steps") == "flag" or plan.dry_run:
        return curve.stop_text("length")
    if plan.time_budget and plan.scheduler != "wsd":  # cosine where the budget binds
        return curve.stop_text("budget_schedule", scheduler=plan.scheduler)
    return curve.stop_text("budget" if plan.time_budget else "cap")


def finish(run, state):
    """The closing lines: why the run stopped, the best score, per-class IoU, and what to try
    for a weak model."""
    run.log(f"stopped at step {state['global_step']}: {stop_reason(run.plan, state)}")
    run.log(f"done: best val mIoU {state['best_metric']:.4f} at step "
            f"{state.get('best_step', state['global_step'])} (epoch {state['best_epoch']}); "
            f"{state['global_step']} steps in {time.monotonic() - run.started:.0f} s; run "
            f"folder {run.run_dir}")
    if run.health:
        run.log("the model is not useful yet: " + "; ".join(run.health))
        run.log("try: " + ", or ".join(advice(run.plan, run.info, run.weak_classes)))


def advice(plan, info, weak):
    """What may help a weak model, leaving out what the run already did and what measured
    worse (median-frequency weights: docs/plan.md): more training when the budget cut it
    short, the run's unused levers, and labels for weak classes in few train images."""
    tries = []
    needed = plan.measured.get("steps_needed", plan.steps)
    if plan.time_budget and plan.steps < needed:
        tries.append(f"a longer --time-budget (the data needs {needed} steps, the budget "
                     f"bought {plan.steps})")
    elif plan.sources.get("steps") == "flag":
        tries.append("more --steps")
    if plan.loss != "ce+dice":
        tries.append("--loss ce+dice")
    if weak and not plan.class_sampling:
        tries.append(f"--class-sampling {CLASS_SAMPLING}")
    if plan.in_channels == 1 and info.get("colour_share", 0) > 0:
        tries.append("--in-channels 3 (some images have colour)")
    if plan.in_channels == 3 and not plan.encoder_weights:
        tries.append(f"--encoder-weights {IMAGENET}")
    images = info.get("class_images") or []
    for index in weak:
        if index < len(images) and images[index] < FEW_IMAGES:
            tries.append(f"labelling more images of '{info['class_names'][index]}' (it is in "
                         f"{images[index]} train images)")
    return tries or ["checking the labels of the weak classes (python dataset.py check)"]
