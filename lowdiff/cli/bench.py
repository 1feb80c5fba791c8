"""`lowdiff bench`: sampling speed of a preset against its baseline, or of each speed switch."""
from __future__ import annotations

import json

from ..checks import batch_size, nonnegative_int, positive_int
from ..plans import CONFIG_PLAN, NamedPlan
from ..presets import get_preset
from .common import add_device, add_progress, add_speed_args, inference_options, sampling_plan


def register(sub) -> None:
    s = sub.add_parser("bench", help="sampling latency/throughput of a preset vs its single-resolution baseline "
                       "(paper protocol: batch 64, mean of repeated runs), and measured effective NFE")
    s.add_argument("--preset", required=True, help="preset name (its baseline is timed alongside)")
    s.add_argument("--batch", type=batch_size, default=64, help="images per batch (default 64, as in the paper)")
    s.add_argument("--repeats", type=positive_int, default=10, help="timed runs per model (default 10)")
    s.add_argument("--warmup", type=nonnegative_int, default=1, help="untimed warm-up runs (default 1)")
    add_device(s)
    s.add_argument("--compare-options", dest="compare_options", action="store_true",
                   help="time side by side: the baseline in plain fp32 eager, then the preset eager, compiled, in "
                   "reduced precision (--precision, default bf16), channels_last, and with all switches "
                   "(compilation takes minutes on a CPU; the progress bar names the configuration at work)")
    s.add_argument("--json", action="store_true", help="print the full report as JSON")
    add_progress(s)
    add_speed_args(s)
    s.set_defaults(func=run)


def run(args) -> None:
    from tqdm import tqdm

    from ..eval.bench import BenchOptions, bench, format_report
    opts = BenchOptions(batch=args.batch, repeats=args.repeats, warmup=args.warmup, device=args.device,
                        inference=inference_options(args))
    preset = get_preset(args.preset)
    preset.validate()                    # a preset file's every setting, before its network is built
    stages = sampling_plan(args, NamedPlan(CONFIG_PLAN, preset.stages), precond=preset.precond).stages
    preset.check_plan(stages)
    if args.compare_options:
        return compare_options(preset, stages, opts, args)
    baseline_stages = None
    if preset.baseline and args.solver:
        baseline_stages = get_preset(preset.baseline).stages.with_solver(args.solver)
    runs = (args.warmup + args.repeats) * (2 if preset.baseline else 1)
    with tqdm(total=runs, unit="run", desc="bench", disable=args.json or args.no_progress) as bar:
        report = bench(preset, opts, progress=bar, stages=stages, baseline_stages=baseline_stages)
    print(json.dumps(report, indent=2, default=str) if args.json else format_report(report))


def compare_options(preset, stages, opts, args) -> None:
    """`lowdiff bench --compare-options`: the plain baseline and each speed switch side by side."""
    from tqdm import tqdm

    from ..eval.bench import compare, format_comparison, option_variants
    precision = args.precision if args.precision != "fp32" else "bf16"
    variants = option_variants(preset, args.device, stages, precision)
    runs = (opts.warmup + opts.repeats) * len(variants)
    with tqdm(total=runs, unit="run", desc="bench", disable=args.json or args.no_progress) as bar:
        report = compare(variants, opts, progress=bar)
    print(json.dumps(report, indent=2, default=str) if args.json else format_comparison(report, preset.name))
