"""The speed switches on this machine, for the bundled Fashion pair and its shipped plans: each
model's paper plan in plain fp32 eager, then its default (fast) plan eager, compiled (fp32),
channels_last, bf16 autocast and compiled + bf16, every row timed alternately in one process
(trained weights; speed does not depend on them, but these are the models users sample).
Writes the table into docs/benchmarks.md (section "options") and the JSON beside the results.

    OMP_NUM_THREADS=1 python benchmarks/options.py                 # batch 32, 3 repeats, one thread
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from datetime import date
from pathlib import Path

import torch
from tqdm import tqdm

from _markdown import write_section
from lowdiff.eval.bench import BenchOptions, Variant, device_name, measure
from lowdiff.inference import InferenceOptions
from lowdiff.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"LowDiff": "bundled:fashion-lowdiff-cond", "EDM": "bundled:fashion-edm-cond"}
SWITCHES = {"eager fp32": InferenceOptions(), "compiled fp32": InferenceOptions(compile=True),
            "channels_last": InferenceOptions(channels_last=True), "bf16": InferenceOptions(precision="bf16"),
            "compiled + bf16": InferenceOptions(compile=True, precision="bf16")}


def variants() -> list[Variant]:
    out = []
    for family, spec in MODELS.items():
        pipe = Pipeline.from_pretrained(spec, device="cpu")
        paper, default = pipe.plans.get("paper"), pipe.default_plan
        out.append(Variant(f"{family} paper plan [eager fp32]", pipe.preset, InferenceOptions(), paper.stages,
                           pipe.denoiser))
        out += [Variant(f"{family} {default.name} plan [{name}]", pipe.preset, o, default.stages, pipe.denoiser)
                for name, o in SWITCHES.items()]
    return out


def bf16_units() -> str:
    """Which bf16 instructions this CPU has (they decide whether bf16 autocast pays off)."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    found = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return ", ".join(found) if found else "none"


def markdown(rows: list[dict], opts: BenchOptions, command: str) -> str:
    base = {r["label"].split(" ")[0]: r["images_per_s"] for r in rows if "[eager fp32]" in r["label"]
            and "paper" in r["label"]}
    fast_eager = {r["label"].split(" ")[0]: r["images_per_s"] for r in rows if "[eager fp32]" in r["label"]
                  and "paper" not in r["label"]}
    lines = ["## Speed switches on this CPU: the shipped plans of the bundled Fashion pair", "",
             f"Measured {date.today().isoformat()} on **{device_name('cpu')}**; batch {opts.batch}, mean of "
             f"{opts.repeats} timed runs after {opts.warmup} warm-up (compilation happens there); bf16 "
             f"instructions of this CPU: {bf16_units()}; all "
             f"{len(rows)} rows timed alternately in one process, trained weights "
             f"(`{MODELS['LowDiff']}`, `{MODELS['EDM']}`). The default plan is what `lowdiff sample` and "
             "`lowdiff.load()` use (`lowdiff info bundled:NAME` lists the plans).", "",
             f"Command: `{command}`", "",
             "| configuration | NFE per stage | img/s | vs the model's paper plan | vs its default plan eager |",
             "|---|---|---|---|---|"]
    for r in rows:
        family = r["label"].split(" ")[0]
        nfe = "/".join(str(v) for v in r["nfe"].values())
        lines.append(f"| {r['label']} | {nfe} | {r['images_per_s']:.2f} | {r['images_per_s'] / base[family]:.2f}x | "
                     f"{r['images_per_s'] / fast_eager[family]:.2f}x |")
    slower = sorted({r["label"].split("[")[1].rstrip("]") for r in rows if "paper" not in r["label"]
                     and r["images_per_s"] < fast_eager[r["label"].split(" ")[0]]})
    lines += ["", f"Slower than eager fp32 here, for both models or one: {', '.join(slower) or 'none'}. "
              "`lowdiff sample --help` says so beside each switch."]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    p.add_argument("--json", default=str(ROOT / "docs" / "results" / "options-cpu.json"))
    args = p.parse_args()
    command = "OMP_NUM_THREADS=1 python benchmarks/options.py " + shlex.join(sys.argv[1:])
    torch.set_num_threads(1)
    opts = BenchOptions(batch=args.batch, repeats=args.repeats, warmup=args.warmup, device="cpu")
    vs = variants()
    with tqdm(total=len(vs) * (args.warmup + args.repeats), unit="run", desc="timing") as bar:
        rows = measure(vs, opts, bar)
    text = markdown(rows, opts, command.strip())
    write_section(Path(args.out), "options", text)
    Path(args.json).write_text(json.dumps({"command": command, "device": device_name("cpu"), "batch": args.batch,
                                           "repeats": args.repeats, "rows": rows}, indent=1, default=str))
    print(text)


if __name__ == "__main__":
    main()
