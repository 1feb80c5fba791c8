"""Inference benchmark: our EDM-baseline sampler against our LowDiff cascade, Heun against
DPM-Solver++(2M), the paper plan against a tuned plan, eager against compiled and reduced
precision; every configuration timed alternately in one process (paper protocol, Sec. 4.2)
and, given trained models and reference statistics, its FID on the same seeds. Writes the
table into docs/benchmarks.md.

    # speed only, random weights
    python benchmarks/inference.py --preset lowdiff-fashion-tiny-cond
    # the acceptance table: trained Fashion-MNIST models, a tuned plan, FID on 2000 samples
    python benchmarks/inference.py --lowdiff runs/fm-lowdiff-cond --baseline runs/fm-edm-cond \\
        --plan tuned.json --ref fashion-test.npz --num 2000

The reference row is the EDM baseline as EDM samples it: fp32, eager, Heun, its own plan
(35 NFE for the Fashion and CIFAR presets); `speedup` is throughput over that row.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

import torch

from _markdown import write_section
from lowdiff.eval.bench import BenchOptions, Variant, compare
from lowdiff.inference import InferenceOptions
from lowdiff.diffusion.plan import StagePlan
from lowdiff.pipeline import Pipeline
from lowdiff.presets import get_preset

ROOT = Path(__file__).resolve().parents[1]


def _model(directory: str | None):
    """(preset, denoiser) of a trained model directory, or (None, None)."""
    if not directory:
        return None, None
    pipe = Pipeline.from_pretrained(directory)
    return pipe.preset, pipe.denoiser


def variants(lowdiff, baseline, lowdiff_model, baseline_model, plan, precision: str, device: str) -> list[Variant]:
    """Solver and plan rows in plain fp32 eager, then each switch on the best LowDiff plan,
    then the baseline with all switches (our EDM sampler at its fastest)."""
    cuda = torch.device(device).type == "cuda"
    every = InferenceOptions(compile=True, channels_last=True, precision=precision, cuda_graphs=cuda)
    L = dict(preset=lowdiff, model=lowdiff_model)
    B = dict(preset=baseline, model=baseline_model)
    best = plan or lowdiff.stages
    rows = [Variant("EDM baseline, Heun (reference)", **B),
            Variant("EDM baseline, DPM-Solver++(2M) at equal NFE", stages=baseline.stages.with_solver("dpmpp2m"), **B),
            Variant("LowDiff paper plan, Heun", **L),
            Variant("LowDiff paper plan, DPM-Solver++(2M) at equal NFE",
                    stages=lowdiff.stages.with_solver("dpmpp2m"), **L)]
    if plan:
        rows.append(Variant("LowDiff tuned plan", stages=plan, **L))
    name = "tuned" if plan else "paper"
    switches = [("compiled", InferenceOptions(compile=True)), (precision, InferenceOptions(precision=precision)),
                ("channels_last", InferenceOptions(channels_last=True))]
    if cuda:
        switches.append(("CUDA graphs", InferenceOptions(cuda_graphs=True)))
    rows += [Variant(f"LowDiff {name} plan, {label}", options=o, stages=best, **L) for label, o in switches]
    rows.append(Variant(f"LowDiff {name} plan, all switches", options=every, stages=best, **L))
    rows.append(Variant("EDM baseline, Heun, all switches", options=every, **B))
    return rows


def fids(rows: list[Variant], args) -> dict[int, float]:
    """FID per row on seeds [seed, seed + num). Compilation and memory layout do not change
    the samples beyond rounding, so rows that differ only in those share one evaluation."""
    from lowdiff.eval.evaluate import evaluate_pipeline, get_extractor
    extractor = get_extractor(args.features, args.classifier, args.device)
    done, out = {}, {}
    for i, v in enumerate(rows):
        key = (v.preset.name, json.dumps([s.__dict__ for s in v.plan], default=str), v.options.precision)
        if key not in done:
            print(f"FID of {v.label} ...", file=sys.stderr)
            pipe = Pipeline(v.model, v.preset, args.device, InferenceOptions(precision=v.options.precision))
            done[key] = evaluate_pipeline(pipe, args.ref, extractor, args.features, num=args.num, seed=args.seed,
                                          stages=v.stages, batch=args.batch, progress=False).fid
        out[i] = done[key]
    return out


def markdown(report: dict, fid: dict[int, float], args, command: str) -> str:
    weights = "trained weights" if args.lowdiff else "random weights (speed only)"
    lines = ["## Inference: solvers, plans and speed switches", "",
             f"Measured {date.today().isoformat()} on **{report['device']}**, batch {report['batch']}, mean of "
             f"{report['repeats']} runs after {args.warmup} warm-up, {weights}; all rows timed alternately in one "
             "process. Speedup = throughput over the first row (EDM's sampler: fp32, eager, Heun)."
             + (f" FID: {args.features} features, {args.num} samples, seeds {args.seed}-{args.seed + args.num - 1}."
                if fid else ""),
             f"Command: `{command}`", "",
             "| configuration | solver | NFE per stage | effective NFE | latency (s) | img/s | speedup | FID |",
             "|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(report["rows"]):
        nfe = "/".join(str(v) for v in r["nfe"].values())
        f = f"{fid[i]:.3f}" if i in fid else "–"
        lines.append(f"| {r['label']} | {r['solver']} | {nfe} | {r['effective_nfe']} | {r['latency_s']:.3f} | "
                     f"{r['images_per_s']:.2f} | **{r['speedup']:.2f}x** | {f} |")
    lines += ["", "Effective NFE is measured (paper App. B): each stage's NFE weighted by its per-evaluation latency "
              "relative to the target resolution, under that row's switches."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="lowdiff-fashion-tiny-cond", help="LowDiff preset when no --lowdiff is given")
    p.add_argument("--lowdiff", help="trained LowDiff model directory")
    p.add_argument("--baseline", help="trained baseline model directory (default: the preset's baseline, random)")
    p.add_argument("--plan", help="a tuned plan (`lowdiff tune`) for the LowDiff model")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp16"], help="the reduced precision row")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--ref", help="reference statistics .npz: adds an FID column (needs trained models)")
    p.add_argument("--features", default="classifier", choices=["classifier", "inception"])
    p.add_argument("--classifier", help="classifier directory (classifier features)")
    p.add_argument("--num", type=int, default=2000, help="samples per FID")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    p.add_argument("--json", help="also write the raw report here")
    args = p.parse_args()

    if args.ref and not (args.lowdiff and args.baseline):
        sys.exit("--ref needs trained models: pass --lowdiff and --baseline")
    (lowdiff, lowdiff_model), (baseline, baseline_model) = _model(args.lowdiff), _model(args.baseline)
    lowdiff = lowdiff or get_preset(args.preset)
    baseline = baseline or get_preset(lowdiff.baseline)
    plan = StagePlan.load(args.plan) if args.plan else None
    if plan:
        lowdiff.check_plan(plan)
    rows = variants(lowdiff, baseline, lowdiff_model, baseline_model, plan, args.precision, args.device)
    opts = BenchOptions(batch=args.batch, repeats=args.repeats, warmup=args.warmup, device=args.device)
    print(f"timing {len(rows)} configurations ...", file=sys.stderr)
    report = compare(rows, opts)
    fid = fids(rows, args) if args.ref else {}
    text = markdown(report, fid, args, "python " + " ".join(sys.argv))
    print(text)
    write_section(Path(args.out), f"inference:{args.device}-{lowdiff.name}", text)
    if args.json:
        for i, row in enumerate(report["rows"]):
            row["fid"] = fid.get(i)
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
