"""Speed benchmark: a naive fp32 baseline against the project's defaults (through the code
train.py and predict.py run: engine.py, inference.py), each in a process of its own, alternated
A B A B so machine noise hits both; on CPU also predict.py --onnx's path (ONNX Runtime, fp32) in
a third process per pair. `python bench.py --size 256 --batch-size 8` (--json for
machine-readable output)."""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from model import SegNet
from segnet import utils
from segnet.bench import gpucheck
from segnet.bench.loaderrate import run_loader
from segnet.bench.speedreport import allocator_summary, summarise, table_lines
from segnet.inference import deploy, inference, plots
from segnet.plan.plan import Plan
from segnet.runtime import (FUSION_CHOICES, Runtime, autocast, resolve_channels_last,
                            resolve_device, tune_cpu_allocator)
from segnet.training import engine, losses
from segnet.training.timing import measure, peak_memory_mb, reset_peak_memory, timed

HERE = Path(__file__).resolve().parent
WORKERS = ("baseline", "project", "compile", "onnx", "loader", "peak", "allocator-on",
           "allocator-off")
# Environment that changes malloc behaviour: the baseline and the "allocator off" runs go
# without it, so that they see glibc's defaults whatever the shell exported.
ALLOCATOR_ENV = ("LD_PRELOAD", "GLIBC_TUNABLES")
ALLOCATOR_ENV_PREFIX = "MALLOC_"


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=utils.HelpFormatter)
    add = parser.add_argument
    add("--size", type=int, default=256, help="square image (and training crop) side, pixels")
    add("--batch-size", type=int, default=8, help="images per training and inference step")
    utils.add_hardware_args(parser, amp=False)
    add("--pairs", type=int, default=3,
        help="baseline/project process pairs, run A B A B; speed-ups are taken pair by pair")
    add("--warmup", type=int, default=1, help="untimed calls per measurement and process")
    add("--repeats", type=int, default=3, help="timed calls per measurement and process")
    add("--steps", type=int, default=1, help="training steps (batches) per timed call")
    add("--in-channels", type=int, default=1, choices=[1, 3], help="image channels")
    add("--num-classes", type=int, default=3, help="classes (the demo set has 3)")
    add("--loader-workers", type=int, nargs="+", default=[0, 1, 2],
        help="DataLoader worker counts whose train-loader throughput is measured (the "
             "device's default count is always added)")
    add("--loader-batches", type=int, default=8, help="timed batches per loader measurement")
    add("--peak-size", type=int, default=None,
        help="side of the square matmul that measures the dtype's peak (default: 2048 on "
             "CPU, 8192 on GPU)")
    add("--allocator", action=argparse.BooleanOptionalAction, default=True,
        help="on CPU, also measure page faults and sys time per step with and without "
             "utils.tune_cpu_allocator, each in its own process")
    add("--compile", action="store_true",
        help="also run the project's defaults with torch.compile (train.py --compile) in a "
             "third process per pair: its speed-up over eager and its compile time")
    add("--onnx", action=argparse.BooleanOptionalAction, default=True,
        help="on CPU, also time predict.py --onnx's inference (export.py's graph in ONNX "
             "Runtime, fp32) in a third process per pair, with PyTorch fp32 (--amp off) in the "
             "same process; skipped with a note without requirements-export.txt")
    add("--seed", type=int, default=0, help="seed of the weights and the synthetic batch")
    add("--gpu-check", type=Path, default=None, metavar="DATA",
        help="instead: the GPU check (about 8 minutes on one GPU): train.py on DATA with "
             "--time-budget 2 and with none, their test mIoU, bench at 480 px and a one-step "
             "torchrun job, in one table (docs/speed.md)")
    add("--ignore-index", type=int, default=255,
        help="--gpu-check: the mask value train.py ignores (15 for Stanford Background)")
    add("--json", action="store_true", help="print one JSON object instead of the table")
    add("--worker", choices=WORKERS, default=None,
        help="internal: run one measurement in this process and print its JSON (the parent "
             "run starts these; use it alone to debug one of them)")
    return parser


def validate_args(args):
    problems = [f"--{name} must be >= {low}, got {value}" for name, value, low in (
        ("size", args.size, 8), ("batch-size", args.batch_size, 1), ("pairs", args.pairs, 1),
        ("warmup", args.warmup, 0), ("repeats", args.repeats, 1), ("steps", args.steps, 1),
        ("num-classes", args.num_classes, 2), ("loader-batches", args.loader_batches, 1),
        ("peak-size", args.peak_size or 64, 64)) if value < low]
    problems += [f"--loader-workers must be >= 0, got {w}" for w in args.loader_workers if w < 0]
    if problems:
        raise SystemExit("error: " + "; ".join(problems))


def synthetic_batch(args):
    """(images float32 [N, C, S, S], masks int64 [N, S, S]) on the CPU, as a loader gives them."""
    generator = torch.Generator().manual_seed(args.seed)
    images = torch.randn(args.batch_size, args.in_channels, args.size, args.size,
                         generator=generator)
    masks = torch.randint(0, args.num_classes, (args.batch_size, args.size, args.size),
                          generator=generator)
    return images, masks


# ---------------------------------------------------------------- (a) the naive baseline

def naive_segnet(args):
    """The same architecture as a typical SegNet repo builds it: nn.MaxUnpool2d (ATen's
    max_unpool2d) in the decoder instead of the project's IndexUnpool."""
    torch.manual_seed(args.seed)
    model = SegNet(in_channels=args.in_channels, num_classes=args.num_classes)
    for decoder in model.decoders:
        decoder.unpool = nn.MaxUnpool2d(kernel_size=2, stride=2)
    return model


def naive_train_step(model, optimizer, images, masks, device):
    """fp32, NCHW, eager; .item() every step for the running loss, as typical loops do."""
    images, masks = images.to(device), masks.to(device)
    optimizer.zero_grad()
    loss = F.cross_entropy(model(images), masks)
    loss.backward()
    optimizer.step()
    return loss.item()


def run_baseline(args, device):
    """Inference, then training (peak memory is read after each), of the naive baseline."""
    model = naive_segnet(args).to(device)
    images, masks = synthetic_batch(args)

    def infer():
        with torch.no_grad():
            return model(images.to(device)).softmax(1).cpu()

    model.eval()
    inference = dict(measure(infer, device, args, args.batch_size),
                     peak_memory_mb=peak_memory_mb(device))
    reset_peak_memory(device)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def train_call():
        for _ in range(args.steps):
            naive_train_step(model, optimizer, images, masks, device)

    training = dict(measure(train_call, device, args, args.batch_size * args.steps),
                    peak_memory_mb=peak_memory_mb(device))
    return {"config": "baseline", "device": str(device), "precision": "fp32",
            "channels_last": False, "threads": torch.get_num_threads(),
            "infer": inference, "train": training}


# ---------------------------------------------------------------- (b) the project's defaults

def project_config(args, **overrides):
    """The plan train.py runs with its defaults, with the device, batch and crop set."""
    return Plan(device=args.device, batch_size=args.batch_size, crop_size=args.size,
                **overrides)


def write_inference_checkpoint(path, model, args):
    """A checkpoint as train.py writes it, without the training state (utils.build_checkpoint)."""
    info = {"in_channels": args.in_channels, "num_classes": args.num_classes,
            "ignore_index": 255, "class_names": [f"class_{c}" for c in range(args.num_classes)],
            "class_colors": plots.default_colors(args.num_classes), "mask_decoding": None,
            "normalization": {"mean": [0.0] * args.in_channels,
                              "std": [1.0] * args.in_channels}}
    utils.save_checkpoint(path, utils.build_checkpoint(model, info, args={"image_size": None}))


def project_inference(args, device, compiled=False):
    """predict.py's path: inference.load_for_inference (its device, precision and layout
    choices), then inference.batch_probs on a CPU batch with the arg-max on the device and uint8
    labels back, as predict.py calls it; and the bare model (the same folded model on a batch
    already on the device, arg-max there, nothing back) that the path is held against."""
    torch.manual_seed(args.seed)
    model = SegNet(in_channels=args.in_channels, num_classes=args.num_classes)
    images, _ = synthetic_batch(args)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.pt"
        write_inference_checkpoint(path, model, args)
        model, info, dtype = inference.load_for_inference(path, args.device, "auto")
    if compiled:
        model = torch.compile(model)

    def infer():
        probs, _ = inference.batch_probs(model, images, dtype=dtype, on_device=True)
        return probs.argmax(1).to(torch.uint8).cpu()

    layout = torch.channels_last if resolve_channels_last(device) else torch.contiguous_format
    ready = images.to(device).contiguous(memory_format=layout)

    @torch.inference_mode()
    def bare():
        with autocast(device, dtype):
            return model(ready).argmax(1)

    path = dict(measure(infer, device, args, args.batch_size),
                peak_memory_mb=peak_memory_mb(device))
    fusion = next(iter(FUSION_CHOICES.values()), None)  # measured on CUDA by the load above
    return dict(path, bare_img_s=measure(bare, device, args, args.batch_size)["img_s"],
                conv_relu_fusion=fusion)


def project_training(args, compiled=False):
    """train.py's training machinery (engine.py): Runtime, model placement, wrap_model,
    optimizer, scheduler, criterion and train_one_epoch over a loader of `--steps` copies of
    one CPU batch."""
    config = project_config(args, compile=compiled)
    torch.manual_seed(args.seed)
    runtime = Runtime(config)
    model = SegNet(in_channels=args.in_channels,
                   num_classes=args.num_classes).to(runtime.device)
    if runtime.channels_last:  # as train.py places the model
        model = model.to(memory_format=torch.channels_last)
    train_model = engine.wrap_model(model, config, runtime, world_size=1)
    optimizer = engine.build_optimizer(config, model, runtime.device)
    scheduler, _ = engine.build_scheduler(config, optimizer, args.steps)
    criterion, _ = losses.build_criterion(config, {"num_classes": args.num_classes},
                                          runtime.device)
    loader = [synthetic_batch(args)] * args.steps
    state, stop = engine.new_state(), engine.StopFlag()

    def train_call():
        state["batch"], state["loss_sum"], state["images"] = 0, 0.0, 0
        engine.train_one_epoch(train_model, loader, criterion, optimizer, scheduler, runtime,
                               state, config, stop, log=lambda message: None)

    reset_peak_memory(runtime.device)
    result = dict(measure(train_call, runtime.device, args, args.batch_size * args.steps),
                  peak_memory_mb=peak_memory_mb(runtime.device))
    return result, runtime


def run_project(args, device, compiled=False):
    """Inference first, then training, as predict.py and train.py run them (both tune the CPU
    allocator); peak memory is read after each."""
    if device.type == "cpu":
        tune_cpu_allocator()
    infer = project_inference(args, device, compiled)
    training, runtime = project_training(args, compiled)
    return dict(config="compile" if compiled else "project", **runtime.describe(),
                threads=torch.get_num_threads(), infer=infer, train=training)


def run_allocator(args, device, tuned):
    """The project's inference and training with (tuned) or without (glibc's defaults)
    utils.tune_cpu_allocator, whose page faults and sys time per call `measure` records."""
    if tuned:
        tune_cpu_allocator()  # from the start, as the scripts do
    infer = project_inference(args, device)
    training, _ = project_training(args)
    return {"config": f"allocator-{'on' if tuned else 'off'}", "infer": infer,
            "train": training}


# ---------------------------------------------------------------- (c) ONNX Runtime

def onnx_skip_note(args, device):
    """Why the ONNX Runtime row is left out of this run, or None when it runs."""
    if not args.onnx:
        return "--no-onnx"
    if device.type != "cpu":
        return f"ONNX Runtime is timed on the CPU only (this run is on {device.type})"
    missing = deploy.missing_packages()
    if missing:
        return f"{', '.join(missing)} not installed ({deploy.INSTALL_HINT})"
    return None


def run_onnx(args, device):
    """predict.py --onnx's path: the checkpoint exported as export.py does it, in ONNX Runtime
    with the project's session options (deploy.load_onnx), through inference.batch_probs; then,
    in the same process, predict.py --checkpoint --amp off (PyTorch fp32, the same network)."""
    tune_cpu_allocator()  # as predict.py does for both
    torch.manual_seed(args.seed)
    model = SegNet(in_channels=args.in_channels, num_classes=args.num_classes)
    images, _ = synthetic_batch(args)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint, exported = Path(folder) / "bench.pt", Path(folder) / "bench.onnx"
        write_inference_checkpoint(checkpoint, model, args)
        deploy.export_checkpoint(checkpoint, exported)  # checked at 97x130: see deploy.MAX_MOVED
        onnx_model, _ = deploy.load_onnx(exported)
        fp32_model, _, _ = inference.load_for_inference(checkpoint, "cpu", "off")
    # No peak memory: this process's peak is the export's (torch.export), not ONNX Runtime's.
    onnx_infer = measure(lambda: inference.batch_probs(onnx_model, images), device, args,
                         args.batch_size)
    fp32_infer = measure(lambda: inference.batch_probs(fp32_model, images), device, args,
                         args.batch_size)
    return {"config": "onnx", "precision": "fp32", "threads": torch.get_num_threads(),
            "infer": onnx_infer, "infer_torch_fp32": fp32_infer}


# ---------------------------------------------------------------- loader, peak, FLOPs

def matmul_peak(dtype, device, size, repeats=5):
    """Best GFLOP/s of a size x size matmul in `dtype`: the machine's practical peak."""
    generator = torch.Generator().manual_seed(0)
    left = torch.randn(size, size, generator=generator).to(device, dtype)
    right = torch.randn(size, size, generator=generator).to(device, dtype)
    timed(lambda: left @ right, device)  # warm-up
    best = min(timed(lambda: left @ right, device) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def run_peak(args, device, precisions):
    """Each precision's matmul peak; on CUDA also TF32's, which cuDNN's fp32 convolutions run
    in by default (torch.backends.cudnn.allow_tf32): held against plain fp32 they read over
    100% of the peak."""
    size = args.peak_size or (8192 if device.type == "cuda" else 2048)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    gflops = {name: matmul_peak(dtypes[name], device, size) for name in precisions}
    if device.type == "cuda" and "fp32" in precisions and torch.backends.cudnn.allow_tf32:
        before = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("high")  # fp32 matmuls in TF32, as cuDNN's convs
        try:
            gflops["tf32"] = matmul_peak(torch.float32, device, size)
        finally:
            torch.set_float32_matmul_precision(before)
    return {"size": size, "gflops": gflops}


def count_flops(args):
    """FLOPs per image of a training step (forward + backward) and of inference, counted by
    torch.utils.flop_counter on the meta device (no computation)."""
    with torch.device("meta"):
        model = SegNet(in_channels=args.in_channels, num_classes=args.num_classes)
        images = torch.empty(args.batch_size, args.in_channels, args.size, args.size)
        masks = torch.zeros(args.batch_size, args.size, args.size, dtype=torch.int64)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(images), masks).backward()
    train_flops = counter.get_total_flops()
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(images)
    return {"train_per_image": train_flops / args.batch_size,
            "infer_per_image": counter.get_total_flops() / args.batch_size}


# ---------------------------------------------------------------- processes

def run_worker(args, device):
    """The body of a `--worker` process: one measurement, printed as JSON."""
    if args.worker == "baseline":
        return run_baseline(args, device)
    if args.worker in ("project", "compile"):
        return run_project(args, device, compiled=args.worker == "compile")
    if args.worker == "onnx":
        return run_onnx(args, device)
    if args.worker == "loader":
        return run_loader(args, device, project_config)
    if args.worker == "peak":
        return run_peak(args, device, os.environ.get("BENCH_PRECISIONS", "fp32").split(","))
    return run_allocator(args, device, tuned=args.worker == "allocator-on")


def worker_env(kind, extra=None):
    """The environment of a worker: the baseline and allocator-off go without malloc tuning."""
    env = dict(os.environ, **(extra or {}))
    if kind in ("baseline", "allocator-off"):
        env = {key: value for key, value in env.items()
               if key not in ALLOCATOR_ENV and not key.startswith(ALLOCATOR_ENV_PREFIX)}
    return env


def spawn(args, kind, extra_env=None):
    """Run `python bench.py --worker KIND` with this run's settings; its JSON result."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", kind,
               "--size", str(args.size), "--batch-size", str(args.batch_size),
               "--device", args.device, "--warmup", str(args.warmup),
               "--repeats", str(args.repeats), "--steps", str(args.steps),
               "--in-channels", str(args.in_channels), "--num-classes", str(args.num_classes),
               "--loader-batches", str(args.loader_batches), "--seed", str(args.seed),
               "--loader-workers", *map(str, args.loader_workers)]
    if args.peak_size:
        command += ["--peak-size", str(args.peak_size)]
    result = subprocess.run(command, cwd=HERE, env=worker_env(kind, extra_env),
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"error: bench worker '{kind}' failed (exit {result.returncode}); "
                         f"run `{' '.join(command)}` to see it alone:\n"
                         f"{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_pairs(args, progress, onnx=False):
    """Baseline and project processes alternated (A B A B ...; A B C with --compile or onnx,
    A B C D with both)."""
    kinds = ("baseline", "project") + ("compile",) * args.compile + ("onnx",) * onnx
    pairs = []
    for index in range(args.pairs):
        pair = {}
        for kind in kinds:
            progress(f"pair {index + 1}/{args.pairs}: {kind}")
            pair[kind] = spawn(args, kind)
        pairs.append(pair)
    return pairs



def run_gpu_check(args, device):
    """The GPU check (segnet/bench/gpucheck.py) on --gpu-check DATA; its run folders go to a
    temporary folder. Without a CUDA device it stops at once, in one line: its runs would
    otherwise train on the CPU for minutes before saying anything."""
    problem = gpucheck.device_problem(device, torch.cuda.is_available(), torch.__version__)
    if problem:
        raise SystemExit(f"error: {problem}")
    if not (args.gpu_check / "train").is_dir():
        raise SystemExit(f"error: --gpu-check {args.gpu_check} has no train/ folder: give a "
                         f"dataset root (e.g. ../shared/data/stanford_background)")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device} (no GPU)"
    with tempfile.TemporaryDirectory() as work:
        rows = gpucheck.gpu_check(HERE, args.gpu_check.resolve(), work, name, args.ignore_index)
    print(json.dumps(rows, indent=2) if args.json else "\n".join(gpucheck.table_lines(name, rows)))
    return 0


def main(args):
    validate_args(args)
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    if args.worker:
        print(json.dumps(run_worker(args, device)))
        return 0
    if args.gpu_check:
        return run_gpu_check(args, device)
    progress = (lambda message: None) if args.json else (
        lambda message: print(f"[bench] {message}", file=sys.stderr, flush=True))
    flops = count_flops(args)
    onnx_skipped = onnx_skip_note(args, device)
    pairs = run_pairs(args, progress, onnx=onnx_skipped is None)
    progress("train loader")
    loader = spawn(args, "loader")
    precisions = sorted({"fp32", pairs[0]["project"]["precision"]})
    progress(f"matmul peak ({', '.join(precisions)})")
    peak = spawn(args, "peak", {"BENCH_PRECISIONS": ",".join(precisions)})
    allocator = None
    if args.allocator and device.type == "cpu":
        progress("allocator off / on")
        allocator = allocator_summary(on=spawn(args, "allocator-on"),
                                      off=spawn(args, "allocator-off"))
    result = summarise(args, device, flops, pairs, loader, peak, allocator, onnx_skipped)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(table_lines(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
