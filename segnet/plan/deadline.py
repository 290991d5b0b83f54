"""A run of fixed length that must end by a deadline (a cross-validation fold after the first:
its share of the job's time budget): the length kept while it fits, fewer validations first,
fewer steps only when the steps alone overrun. Pure functions of the measured seconds."""

MARGIN = 0.03  # of the time left, for the saves and the noise of the measured times


def checks_left(done, steps, val_every):
    """Intermediate validations still to come: the multiples of val_every in (done, steps)
    (the last step's validation is counted apart, in final_seconds)."""
    return max(0, (steps - 1) // max(val_every, 1) - done // max(val_every, 1))


def seconds_needed(done, steps, val_every, step_seconds, val_seconds, final_seconds):
    """Seconds from step `done` to the run's end: its steps, its validations, the final one."""
    return ((steps - done) * step_seconds + checks_left(done, steps, val_every) * val_seconds
            + final_seconds)


def fit_deadline(done, steps, val_every, seconds_left, step_seconds, val_seconds,
                 final_seconds):
    """(val_every, steps) that end within seconds_left at the measured seconds a step and a
    validation (final_seconds: the last validation and what follows it). The planned pair
    while it fits; else val_every doubled (the checks keep to the planned ones' steps) until
    the validations left fit, up to the final validation alone, the length kept; only when the
    steps alone overrun, the steps the time left affords after the final validation (at least
    one more than `done`, never more than planned)."""
    usable = seconds_left * (1 - MARGIN)
    every = val_every
    while (checks_left(done, steps, every) and seconds_needed(
            done, steps, every, step_seconds, val_seconds, final_seconds) > usable):
        every *= 2
    every = min(every, steps)
    if seconds_needed(done, steps, every, step_seconds, val_seconds, final_seconds) <= usable:
        return every, steps
    afford = int((usable - final_seconds) / max(step_seconds, 1e-9))
    return every, max(done + 1, min(steps, done + afford))
