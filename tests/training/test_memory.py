"""A CUDA out-of-memory during training (segnet/training/memory.py), on the CPU: the step is
made to raise torch's out-of-memory error; the run saves last.pt, names a batch that fits (a
real forward and backward pass tried on the device) and --resume continues with it."""
import torch

import train
from helpers import random_model, write_tiny_dataset
from segnet.plan.plan import Plan
from segnet.runtime import Runtime
from segnet.training import engine, memory


def test_candidates_halve_the_batch_then_shrink_the_crop():
    sizes = memory.candidates(16, 480)
    assert sizes[:3] == [(8, 480), (4, 480), (2, 480)]
    crops = [crop for batch, crop in sizes[3:]]
    assert crops and all(batch == 2 for batch, _ in sizes[3:]) and crops == sorted(crops)[::-1]
    assert all(crop % 8 == 0 and crop < 480 for crop in crops)
    assert memory.candidates(2, 96) == [(2, crop) for crop in crops_below(96)]
    line = memory.advice_line(40, 16, 480, (8, 480), "runs/x")
    assert line == ("out of memory at step 40 (crop 480 px, batch 16); saved runs/x/last.pt; "
                    "--batch-size 8 fits: continue with: python train.py --resume runs/x "
                    "--batch-size 8")
    assert "--batch-size 2 --crop-size 360" in memory.advice_line(40, 2, 480, (2, 360), "r")
    assert "no smaller batch or crop fit" in memory.advice_line(40, 2, 96, None, "r")


def crops_below(crop):
    from segnet.plan.plan import crop_ladder
    return crop_ladder(crop)[1:]


def test_the_probe_does_not_train_the_model():
    model = random_model(num_classes=3).train()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    runtime = Runtime(Plan(device="cpu", amp="off"))
    assert memory.step_fits(model, runtime, 2, 32, 1)
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert all(parameter.grad is None for parameter in model.parameters())


def test_an_out_of_memory_saves_names_a_batch_that_fits_and_resumes(tmp_path, monkeypatch,
                                                                    capsys):
    data = write_tiny_dataset(tmp_path / "data", counts=(("train", 8), ("val", 2)))
    out = tmp_path / "run"
    common = ["--data", str(data), "--out", str(out), "--crop-size", "16", "--workers", "0",
              "--steps", "8", "--val-every", "8", "--log-every", "1"]
    original, calls = engine.train_step, []

    def failing_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise memory.OUT_OF_MEMORY("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, "train_step", failing_step)
    parser = train.get_args_parser()
    assert train.main(parser.parse_args(common + ["--batch-size", "4"])) == 1
    log = (out / "train.log").read_text()
    assert ("error: out of memory at step 3 (crop 16 px, batch 4); saved " in log
            and "--batch-size 2 fits: continue with: python train.py --resume" in log)
    saved = torch.load(out / "last.pt", weights_only=True)
    # 8 images, batch 4: 2 steps an epoch; the failed 4th step leaves epoch 1 with 1 batch done
    assert (saved["global_step"], saved["epoch"], saved["batch"]) == (3, 1, 1)
    assert saved["plan"]["batch_size"] == 4
    monkeypatch.setattr(engine, "train_step", original)
    assert train.main(parser.parse_args(common + ["--resume", str(out), "--batch-size", "2"])) == 0
    resumed = torch.load(out / "last.pt", weights_only=True)
    assert resumed["global_step"] == 8 and resumed["plan"]["batch_size"] == 2
    assert "resumed from" in (out / "train.log").read_text()


def test_rebatched_counts_the_epoch_in_flight_at_the_new_batch_size():
    from segnet.training import trainer
    state = dict(engine.new_state(), batch=3, global_step=7)
    plan = Plan(batch_size=2)
    assert trainer.rebatched(state, {"plan": {"batch_size": 4}}, plan)["batch"] == 6
    assert trainer.rebatched(state, {"plan": {"batch_size": 2}}, plan)["batch"] == 3
    assert trainer.rebatched(state, {}, plan)["global_step"] == 7


def test_a_rank_out_of_memory_under_torchrun_says_so_without_collectives(capsys):
    """Under torchrun other ranks may wait in the step's collectives: the rank that ran out
    of memory saves alone (rank 0 writes, without the others' loss sums) and does not probe;
    it names the smaller size."""
    saves = []

    class FakeRun:
        world_size, rank = 2, 1
        plan = Plan(batch_size=8, crop_size=256)
        model = random_model(num_classes=3)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

        def save(self, name, state, alone=False):
            saves.append((name, alone))

    assert train.out_of_memory(FakeRun(), {"global_step": 7}, None, print) == 1
    assert saves == [("last.pt", True)] and capsys.readouterr().err.strip() == (
        "error: rank 1 ran out of memory at step 7 (crop 256 px, batch 8 per process); the job "
        "stops; rerun the same torchrun command with --resume <the run folder> --batch-size 4: "
        "it continues from the run's last last.pt")
    smallest = memory.distributed_line(0, 3, Plan(batch_size=memory.MIN_BATCH, crop_size=256))
    assert f"--crop-size {memory.crop_ladder(256)[1]}:" in smallest
