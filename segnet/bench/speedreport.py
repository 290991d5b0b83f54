"""bench.py's result from its workers' measurements: medians, ranges and speed-ups taken pair
by pair, GFLOP/s against the dtype's peak, the allocator, compile and ONNX Runtime rows, and the
printed table (what `python bench.py` shows without --json)."""
import statistics

import torch

from segnet.runtime import cpu_has_fast_bf16

# ---------------------------------------------------------------- summary

def spread(values):
    """Median and range of a list of numbers."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def ratios(pairs, numerator, denominator, phase):
    """numerator/denominator img/s of `phase`, pair by pair."""
    return [pair[numerator][phase]["img_s"] / pair[denominator][phase]["img_s"]
            for pair in pairs]


def peak_key(precision, peak):
    """The peak a precision's convolutions are held against: TF32's for fp32 where bench
    measured it (CUDA, where cuDNN runs fp32 convolutions in TF32), else the precision's own."""
    return "tf32" if precision == "fp32" and "tf32" in peak["gflops"] else precision


def config_summary(pairs, kind, flops, peak):
    """Median img/s, GFLOP/s, fraction of the dtype's peak and memory of one configuration."""
    precision = pairs[0][kind].get("precision", "fp32")
    summary = {"precision": precision, "channels_last": pairs[0][kind].get("channels_last")}
    for phase in ("train", "infer"):
        rate = statistics.median(pair[kind][phase]["img_s"] for pair in pairs)
        gflops = rate * flops[f"{phase}_per_image"] / 1e9
        summary[phase] = {
            "img_s": rate, "img_s_per_pair": [pair[kind][phase]["img_s"] for pair in pairs],
            "gflops": gflops, "peak_fraction": gflops / peak["gflops"][peak_key(precision, peak)],
            "peak_memory_mb": statistics.median(pair[kind][phase]["peak_memory_mb"]
                                                for pair in pairs),
            "page_faults_per_call": statistics.median(pair[kind][phase]["page_faults_per_call"]
                                                      for pair in pairs),
            "sys_s_per_call": statistics.median(pair[kind][phase]["sys_s_per_call"]
                                                for pair in pairs)}
    return summary


def compile_summary(pairs):
    """torch.compile against eager project defaults, and compile time (first call - median)."""
    summary = {}
    for phase in ("train", "infer"):
        first = [pair["compile"][phase]["warmup_seconds"][0] for pair in pairs
                 if pair["compile"][phase]["warmup_seconds"]]
        step = [statistics.median(pair["compile"][phase]["seconds"]) for pair in pairs]
        summary[phase] = {"speedup": spread(ratios(pairs, "compile", "project", phase)),
                          "compile_s": statistics.median(first) - statistics.median(step)
                          if first else None}
    return summary


def onnx_summary(pairs, skipped):
    """ONNX Runtime (fp32) inference against the project's default path (pair by pair) and
    against PyTorch fp32 timed in the same process; or why it was skipped."""
    if skipped:
        return {"skipped": skipped}
    return {"infer_img_s": statistics.median(pair["onnx"]["infer"]["img_s"] for pair in pairs),
            "torch_fp32_img_s": statistics.median(pair["onnx"]["infer_torch_fp32"]["img_s"]
                                                  for pair in pairs),
            "ratio_to_project": spread(ratios(pairs, "onnx", "project", "infer")),
            "ratio_to_torch_fp32": spread([pair["onnx"]["infer"]["img_s"]
                                           / pair["onnx"]["infer_torch_fp32"]["img_s"]
                                           for pair in pairs]),
            "threads": pairs[0]["onnx"]["threads"]}


def summarise(args, device, flops, pairs, loader, peak, allocator, onnx_skipped=None):
    """The result object; its first keys are the issue's headline figures."""
    baseline = config_summary(pairs, "baseline", flops, peak)
    project = config_summary(pairs, "project", flops, peak)
    train_ratios, infer_ratios = (ratios(pairs, "project", "baseline", phase)
                                  for phase in ("train", "infer"))
    default_rate = loader["img_s"][str(loader["default_workers"])]
    result = {
        "train_speedup": statistics.median(train_ratios),
        "infer_speedup": statistics.median(infer_ratios),
        "train_peak_fraction": project["train"]["peak_fraction"],
        "loader_ratio": default_rate / project["train"]["img_s"],
        "infer_path_share": statistics.median(pair["project"]["infer"]["img_s"]
                                              / pair["project"]["infer"]["bare_img_s"]
                                              for pair in pairs),
        "train_speedup_per_pair": train_ratios, "infer_speedup_per_pair": infer_ratios,
        "settings": {"device": str(device), "size": args.size, "batch_size": args.batch_size,
                     "pairs": args.pairs, "warmup": args.warmup, "repeats": args.repeats,
                     "steps": args.steps, "in_channels": args.in_channels,
                     "num_classes": args.num_classes, "threads": pairs[0]["project"]["threads"],
                     "torch": torch.__version__, "cpu_fast_bf16": cpu_has_fast_bf16()},
        "flops": flops, "peak": peak, "baseline": baseline, "project": project,
        "loader": dict(loader, train_consumption_img_s=project["train"]["img_s"]),
        "allocator": allocator, "raw_pairs": pairs,
        "conv_relu_fusion": pairs[0]["project"]["infer"].get("conv_relu_fusion")}
    if args.compile:
        result["compile"] = compile_summary(pairs)
    if args.onnx:
        result["onnx"] = onnx_summary(pairs, onnx_skipped)
    return result


def allocator_summary(on, off):
    """Page faults, sys time and img/s per call with and without the in-program tuning."""
    def figures(run, phase):
        return {key: run[phase][key] for key in ("img_s", "page_faults_per_call",
                                                 "sys_s_per_call", "user_s_per_call")}
    return {phase: {"off": figures(off, phase), "on": figures(on, phase),
                    "speedup": on[phase]["img_s"] / off[phase]["img_s"]}
            for phase in ("train", "infer")}


# ---------------------------------------------------------------- report

def table_lines(result):
    settings, base, proj = result["settings"], result["baseline"], result["project"]
    peak = result["peak"]["gflops"]
    lines = [f"bench: {settings['device']}, {settings['threads']} threads, {settings['size']}x"
             f"{settings['size']}, batch {settings['batch_size']}, {settings['pairs']} pairs x "
             f"{settings['repeats']} timed calls (torch {settings['torch']})",
             f"{'':<26}{'baseline':>14}{'project':>14}{'speed-up (median, range)':>30}",
             f"{'precision, layout':<26}{'fp32 NCHW':>14}"
             f"{proj['precision'] + (' NHWC' if proj['channels_last'] else ' NCHW'):>14}"]
    for phase, name in (("train", "training"), ("infer", "inference")):
        pair_ratios = result[f"{phase}_speedup_per_pair"]
        lines.append(f"{name + ' img/s':<26}{base[phase]['img_s']:>14.2f}"
                     f"{proj[phase]['img_s']:>14.2f}{result[phase + '_speedup']:>16.2f}x "
                     f"[{min(pair_ratios):.2f}-{max(pair_ratios):.2f}]")
        lines.append(f"{name + ' GFLOP/s':<26}{base[phase]['gflops']:>14.1f}"
                     f"{proj[phase]['gflops']:>14.1f}")
        lines.append(f"{'  of the dtype peak':<26}{base[phase]['peak_fraction']:>14.0%}"
                     f"{proj[phase]['peak_fraction']:>14.0%}")
        lines.append(f"{name + ' peak memory MB':<26}{base[phase]['peak_memory_mb']:>14.0f}"
                     f"{proj[phase]['peak_memory_mb']:>14.0f}")
    lines.append("matmul peak " + ", ".join(f"{name} {value:.0f} GFLOP/s"
                                            for name, value in peak.items())
                 + f" ({result['peak']['size']}x{result['peak']['size']})")
    loader = result["loader"]
    lines.append("train loader img/s: " + ", ".join(
        f"{workers} workers {rate:.0f}" for workers, rate in loader["img_s"].items())
        + f"; training consumes {loader['train_consumption_img_s']:.2f} img/s; loader ratio "
          f"{result['loader_ratio']:.1f}x at the default {loader['default_workers']} workers"
          + (f" (augmentation ends on the {loader['augment_on']})" if "augment_on" in loader
             else ""))
    lines.append(f"predict.py's path: {result['infer_path_share']:.0%} of the bare model's img/s "
                 f"(the folded model on a batch already on the device, arg-max there)")
    lines += fusion_lines(result.get("conv_relu_fusion"))
    lines += onnx_lines(result.get("onnx"), proj["precision"])
    lines += allocator_lines(result["allocator"]) + compile_lines(result.get("compile"))
    return lines


def fusion_lines(fusion):
    """runtime.measure_fusion's choice, measured where the model ran on CUDA."""
    if not fusion:
        return []
    if "why" in fusion:
        return [f"conv+bias+ReLU as one cuDNN kernel: not used ({fusion['why']})"]
    return [f"conv+bias+ReLU as one cuDNN kernel: {'used' if fusion['fused'] else 'not used'} "
            f"({fusion['fused_ms']:.2f} ms against {fusion['plain_ms']:.2f} ms unfused, a "
            f"batch of 4 at 256 px)"]


def onnx_lines(summary, precision):
    if not summary:
        return []
    if "skipped" in summary:
        return [f"ONNX Runtime row skipped: {summary['skipped']}"]
    project, fp32 = summary["ratio_to_project"], summary["ratio_to_torch_fp32"]
    return [f"inference img/s, ONNX Runtime fp32 ({summary['threads']} threads): "
            f"{summary['infer_img_s']:.2f} = x{project['median']:.2f} of the project's "
            f"{precision} [{project['min']:.2f}-{project['max']:.2f}], x{fp32['median']:.2f} of "
            f"PyTorch fp32 (--amp off, {summary['torch_fp32_img_s']:.2f} img/s, same process) "
            f"[{fp32['min']:.2f}-{fp32['max']:.2f}]"]


def allocator_lines(allocator):
    if not allocator:
        return []
    lines = []
    for phase, name in (("train", "training step"), ("infer", "inference call")):
        off, on = allocator[phase]["off"], allocator[phase]["on"]
        lines.append(f"allocator, per {name}: page faults {off['page_faults_per_call']:.0f} -> "
                     f"{on['page_faults_per_call']:.0f}, sys {off['sys_s_per_call']:.2f} s -> "
                     f"{on['sys_s_per_call']:.2f} s, speed x{allocator[phase]['speedup']:.2f} "
                     f"(glibc default -> utils.tune_cpu_allocator)")
    return lines


def compile_lines(summary):
    if not summary:
        return []
    return [f"torch.compile {phase}: x{summary[phase]['speedup']['median']:.2f} of eager "
            f"[{summary[phase]['speedup']['min']:.2f}-{summary[phase]['speedup']['max']:.2f}], "
            f"compile time {summary[phase]['compile_s']:.1f} s"
            for phase in ("train", "infer") if summary[phase]["compile_s"] is not None]
