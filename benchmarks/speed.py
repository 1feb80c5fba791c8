"""Sampling-speed benchmark: each LowDiff preset against its single-resolution baseline,
timed alternately in one process (paper protocol, Sec. 4.2), then written to
docs/benchmarks.md next to the paper's Table 5.

    python benchmarks/speed.py                       # CPU defaults (batch 8, 3 repeats)
    python benchmarks/speed.py --device cuda --batch 64 --repeats 10 --precision bf16
    python benchmarks/speed.py --reports a.json b.json    # render saved `lowdiff bench --json` outputs
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

from _markdown import write_section
from lowdiff.eval.bench import BenchOptions, bench
from lowdiff.inference import InferenceOptions

ROOT = Path(__file__).resolve().parents[1]
PAPER_TABLE5 = [  # LowDiff paper Table 5: RTX 4090 (CIFAR, FFHQ), A100 (ImageNet), batch 64, mean of 10 runs
    ("CIFAR-10 uncond / cond", "EDM", 2.22, 28.8, "LowDiff", 1.37, 46.7, 1.605),
    ("FFHQ-64", "EDM", 12.06, 5.3, "LowDiff", 7.95, 8.1, 1.528),
    ("ImageNet-256", "LightningDiT-B/1", 21.87, 2.9, "LowDiff", 13.23, 4.8, 1.655),
]


def run(presets: list[str], opts: BenchOptions) -> list[dict]:
    reports = []
    for name in presets:
        print(f"benchmarking {name} ...", file=sys.stderr)
        reports.append(bench(name, opts))
    return reports


def markdown(reports: list[dict], opts: BenchOptions, command: str) -> str:
    lines = ["## Sampling speed: LowDiff vs single-resolution baseline", "",
             f"Measured {date.today().isoformat()} on **{reports[0]['device']}**, batch {opts.batch}, mean of "
             f"{opts.repeats} runs after {opts.warmup} warm-up, {opts.inference.precision}"
             f"{', channels_last' if opts.inference.channels_last else ''}"
             f"{', torch.compile' if opts.inference.compile else ''}; "
             "random weights (speed does not depend on them); both models timed alternately in one process.",
             f"Command: `{command}`", "",
             "| preset | baseline latency (s) | baseline img/s | LowDiff latency (s) | LowDiff img/s | ratio | "
             "NFE per stage | effective NFE (measured) | stage time shares | time outside evaluations: baseline / LowDiff |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in reports:
        b, l = r["baseline"], r["lowdiff"]
        nfe = "/".join(str(v) for v in l["nfe"].values())
        shares = ", ".join(f"{k}: {v:.0%}" for k, v in l["stage_time_share"].items())
        lines.append(f"| {r['preset']} | {b['latency_s']:.3f} | {b['images_per_s']:.2f} | {l['latency_s']:.3f} | "
                     f"{l['images_per_s']:.2f} | **{r['throughput_ratio']:.2f}x** | {nfe} (baseline "
                     f"{'/'.join(str(v) for v in b['nfe'].values())}) | {l['effective_nfe']} | {shares} | "
                     f"{b['overhead']:+.1%} / {l['overhead']:+.1%} |")
    lines += ["", "Time outside evaluations = 1 - (sum of NFE x per-evaluation latency) / sampling latency, per "
              "model: solver arithmetic, noise generation, hand-over between stages, plus timing noise (negative "
              "values are noise). The cascade's own overhead is LowDiff's figure minus the baseline's.", "",
              "### The paper's Table 5, for comparison", "",
              "| dataset | baseline | latency (s) | img/s | ours | latency (s) | img/s | ratio |", "|---|---|---|---|---|---|---|---|"]
    for row in PAPER_TABLE5:
        lines.append("| " + " | ".join(str(v) for v in row[:-1]) + f" | {row[-1]:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["lowdiff-fashion-tiny", "cifar10-uncond"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    p.add_argument("--json", help="also write the raw reports here")
    p.add_argument("--reports", nargs="+", help="render saved `lowdiff bench --json` outputs instead of measuring")
    args = p.parse_args()
    if args.reports:
        reports = [json.loads(Path(f).read_text()) for f in args.reports]
        first = reports[0]
        args.device = "cuda" if "cpu" not in first["device"] else "cpu"
        args.precision = first["precision"]
        opts = BenchOptions(batch=first["batch"], repeats=first["repeats"], device=args.device,
                            inference=InferenceOptions(compile=first["compile"], channels_last=first["channels_last"],
                                                       precision=first["precision"]))
    else:
        opts = BenchOptions(batch=args.batch, repeats=args.repeats, device=args.device,
                            inference=InferenceOptions(compile=args.compile, channels_last=args.channels_last,
                                                       precision=args.precision))
        reports = run(args.presets, opts)
    text = markdown(reports, opts, "python " + " ".join(sys.argv))
    print(text)
    write_section(Path(args.out), f"speed:{args.device}-{args.precision}", text)
    if args.json:
        Path(args.json).write_text(json.dumps(reports, indent=2, default=str))


if __name__ == "__main__":
    main()
