"""The training plan as printed at the start of a run and by `train.py --plan-only`: one row per
planned value, its value and whether a flag set it ("flag") or the plan did ("auto"), then the
measured speed and the reasons."""
from segnet.plan import saves


def table_lines(plan, world_size=1):
    """The plan as printed at start: one row per value, marked auto or flag."""
    budget = plan.time_budget
    rows = [("crop size", "whole images" if plan.crop_size == 0 else f"{plan.crop_size} px",
             "crop_size"),
            ("batch size", f"{plan.batch_size}" + (f" per process, {plan.batch_size * world_size}"
                                                   f" global" if world_size > 1 else ""),
             "batch_size"),
            ("steps", steps_text(plan), "steps"),
            ("validate every", f"{plan.val_every} steps" + (
                f" on {plan.val_images} val images (final: all)" if plan.val_images else ""),
             "val_every"),
            ("save last.pt", saves.describe(plan), "save_steps"),
            ("learning rate", f"{plan.lr:.2e} ({plan.optimizer}, {plan.scheduler})", "lr"),
            ("warm-up", f"{plan.warmup_steps} steps", "warmup_steps"),
            ("loss", plan.loss, "loss"),
            ("class weights", plan.class_weights, "class_weights"),
            ("time budget", f"{budget / 60:.1f} min" if budget else "none", "time_budget"),
            ("channels", "3 (colour)" if plan.in_channels == 3 else f"{plan.in_channels}",
             "in_channels"),
            ("scale", "native" if plan.train_scale == 1 else f"{plan.train_scale:g} (images "
             "resized; predictions at full size)", "train_scale"),
            ("class sampling", f"{plan.class_sampling:.0%} of crops on a drawn class"
             if plan.class_sampling else "off", "class_sampling"),
            ("flips", " and ".join(name for name, on in (("horizontal", plan.hflip),
                                                          ("vertical", plan.vflip)) if on)
             or "none", "hflip" if plan.sources.get("hflip") == "flag" else "vflip"),
            ("rotation", f"+-{plan.rotate:g} deg" if plan.rotate else "none", "rotate"),
            ("encoder", plan.encoder_weights or "random", "encoder_weights"),
            ("compile", "torch.compile" if plan.compile else "off (eager)", "compile"),
            ("augmentation", f"{plan.augmentation}: scale {plan.scale[0]:g}-{plan.scale[1]:g}, "
             f"jitter {plan.jitter:g}, noise {plan.noise:g}" + (
                 f" ({plan.measured['passes']:g} passes)" if "passes" in plan.measured else ""),
             "augmentation")]
    width = max(len(name) for name, _, _ in rows)
    column = max(34, *(len(value) + 1 for _, value, _ in rows))
    lines = ["plan:"] + [f"  {name:<{width}}  {value:<{column}} {plan.sources.get(key, 'flag')}"
                         for name, value, key in rows]
    if "step_seconds" in plan.measured:
        lines.append(f"  measured: {plan.measured['step_seconds']:.3f} s a training step, "
                     f"{plan.measured['val_seconds']:.1f} s a full validation")
    lines += [f"  {note}" for note in plan.notes]
    return lines


def steps_text(plan):
    """The length: a count, with how the learning curve may end the run sooner."""
    if not plan.plateau_gain or plan.sources.get("steps") == "flag" or plan.dry_run:
        return f"{plan.steps}"
    if plan.time_budget is None:
        return f"until val mIoU plateaus (at most {plan.steps})"
    return f"{plan.steps} (fewer if val mIoU plateaus)"
