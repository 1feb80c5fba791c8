"""Consistency tuning of the Fashion pair (issue 39): FID and throughput of the consistency-tuned
EDM baseline at 1 and 2 steps and of the consistency-tuned LowDiff cascade at 1-2 steps per stage,
beside the training-free tuned plans of the models they started from, every row timed
alternately in one process; each tuning's compute from its log. Writes the section "consistency" of
docs/results.md and docs/benchmarks.md, docs/results/consistency.json and the grids
docs/img/consistency-*.png.

    lowdiff eval ref --data fashion-mnist:test --out runs/fashion-test.npz
    python benchmarks/consistency_pair.py --ref runs/fashion-test.npz --batch 32 --repeats 2 \
        --cache docs/results/frontier-cache.json     # the bundled tuned pair; FIDs shared with the frontier

The bundled pair (bundled:fashion-lowdiff-ct, bundled:fashion-edm-ct) was tuned by

    lowdiff train --preset lowdiff-fashion-tiny-cond-ct --init-from bundled:fashion-lowdiff-cond --data fashion-mnist --out runs/ct-lowdiff
    lowdiff train --preset edm-fashion-tiny-cond-ct --init-from bundled:fashion-edm-cond --data fashion-mnist --out runs/ct-edm --match-compute runs/ct-lowdiff
    python scripts/bundle_model.py runs/ct-lowdiff fashion-lowdiff-ct && python scripts/bundle_model.py runs/ct-edm fashion-edm-ct

(--lowdiff runs/ct-lowdiff --baseline runs/ct-edm measure the runs themselves).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from datetime import date
from pathlib import Path

from lowdiff.eval.bench import BenchOptions, Variant, device_name, measure
from lowdiff.eval.evaluate import get_extractor
from lowdiff.images import save_grid
from lowdiff.pipeline import Pipeline
from lowdiff.train.compute import model_compute

from _markdown import write_section
from frontier import cached_fid, reference_name

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "docs" / "results" / "consistency-cache.json"
# family -> the plans of its model that are measured: (model option, [plan names])
TUNED_PLANS = {"baseline": ["one-step", "two-step"], "lowdiff": ["one-step", "two-low", "two-step"]}
START_PLANS = {"baseline": ["best", "fast"], "lowdiff": ["best", "fast"]}
NAMES = {"baseline": "EDM", "lowdiff": "LowDiff"}


def rows_of(args) -> list[dict]:
    rows = []
    for family in ("baseline", "lowdiff"):
        for kind, spec, names in (("tuned", getattr(args, family), TUNED_PLANS[family]),
                                  ("start", getattr(args, f"{family}_start"), START_PLANS[family])):
            pipe = Pipeline.from_pretrained(spec)
            for name in names:
                rows.append(dict(family=family, kind=kind, spec=spec, name=name, pipe=pipe,
                                 plan=pipe.plans.get(name).stages))
    return rows


def grids(rows: list[dict], prefix: str) -> list[str]:
    """One labelled grid (4 per class) per family's two-step consistency plan."""
    paths = []
    for r in rows:
        if r["kind"] == "tuned" and r["name"] == "two-step":
            out = ROOT / "docs" / "img" / f"{prefix}-{r['family']}.png"
            labels = [c for c in range(10) for _ in range(4)]
            images = r["pipe"](seeds=list(range(40)), class_labels=labels, stages=r["plan"]).images
            save_grid(images, out, scale=2, ncol=4, row_labels=r["pipe"].preset.class_names)
            paths.append(out.relative_to(ROOT / "docs").as_posix())
    return paths


def markdown(rows, compute, images, args, command, device) -> str:
    lines = [f"## {args.heading}", "",
             f"Measured {date.today().isoformat()} on **{device}**; batch {args.batch}, mean of {args.repeats} timed "
             f"runs after 1 warm-up, all {len(rows)} rows timed alternately in one process (eager fp32). FID: bundled "
             f"classifier features, {args.num} samples, seeds {args.seed}-{args.seed + args.num - 1}, against the "
             "10,000 test images. Command: `" + command + "`.", "",
             "Tunings (`lowdiff train --preset ...-ct --init-from MODEL`, the presets' recipe: lr 1e-4, batch 64, "
             "EMA half-life 2 kimg, the step t - r halved every kimg), the LowDiff one first, the EDM one with "
             "`--match-compute` of it:", "",
             "| tuning | from | kimg | TFLOP | one-thread s |", "|---|---|---|---|---|"]
    for family in ("baseline", "lowdiff"):
        c = compute[family]
        lines.append(f"| `{getattr(args, family)}` | `{getattr(args, f'{family}_start')}` | {c['kimg']:g} | "
                     f"{c['train_tflop']:.1f} | {c['thread_seconds']:.0f} |")
    lines += ["", "| family | model | plan | solver | NFE per stage | eff. NFE (measured) | img/s | FID |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        nfe = "/".join(str(v) for v in r["plan"].nfe_per_stage.values())
        solver = "/".join(dict.fromkeys(s.solver for s in r["plan"]))
        what = "consistency-tuned" if r["kind"] == "tuned" else "untuned start, training-free tuned plan"
        lines.append(f"| {NAMES[r['family']]} | {what} | `{r['name']}` | {solver} | {nfe} | {r['effective_nfe']} | "
                     f"{r['images_per_s']:.2f} | {r['fid']:.3f} |")
    lines += ["", "Effective NFE is measured (paper App. B): each stage's NFE weighted by its per-evaluation latency "
              "relative to 32x32, rounded up.", ""]
    lines += [f"![{p}]({p})" for p in images]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lowdiff", default="bundled:fashion-lowdiff-ct", help="the consistency-tuned LowDiff model")
    p.add_argument("--baseline", default="bundled:fashion-edm-ct", help="the consistency-tuned baseline")
    p.add_argument("--lowdiff-start", dest="lowdiff_start", default="bundled:fashion-lowdiff-cond")
    p.add_argument("--baseline-start", dest="baseline_start", default="bundled:fashion-edm-cond")
    p.add_argument("--ref", required=True)
    p.add_argument("--num", type=int, default=2000)
    p.add_argument("--seed", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--cache", default=str(CACHE))
    p.add_argument("--out", nargs="+", default=[str(ROOT / "docs" / "results.md"), str(ROOT / "docs" / "benchmarks.md")],
                   help="pages whose section --tag gets the table")
    p.add_argument("--json", default=str(ROOT / "docs" / "results" / "consistency.json"))
    p.add_argument("--tag", default="consistency", help="section tag in --out")
    p.add_argument("--heading", default="Consistency tuning: two evaluations per stage, cascade against baseline")
    p.add_argument("--grids", default="consistency", help="grid file prefix under docs/img")
    args = p.parse_args()
    command = "python benchmarks/consistency_pair.py " + shlex.join(sys.argv[1:])
    args.ref_name = reference_name(args.ref)
    rows = rows_of(args)
    extractor = get_extractor("classifier", channels=1, ref=args.ref)
    for r in rows:
        r["fid"] = cached_fid(r["pipe"], r["spec"], r["plan"], "fp32", args.seed, args, extractor)
    opts = BenchOptions(batch=args.batch, repeats=args.repeats, warmup=1, device="cpu")
    timed = measure([Variant(f"{r['family']} {r['kind']} {r['name']}", r["pipe"].preset, stages=r["plan"],
                             model=r["pipe"].denoiser) for r in rows], opts)
    for r, t in zip(rows, timed):
        r["images_per_s"], r["effective_nfe"] = t["images_per_s"], t["effective_nfe"]
    compute = {f: model_compute(getattr(args, f)) for f in ("baseline", "lowdiff")}
    text = markdown(rows, compute, grids(rows, args.grids), args, command, device_name("cpu"))
    for out in args.out:
        write_section(Path(out), args.tag, text)
    Path(args.json).write_text(json.dumps({
        "command": command, "batch": args.batch, "num": args.num, "compute": compute,
        "rows": [{k: r[k] for k in ("family", "kind", "spec", "name", "fid", "images_per_s", "effective_nfe")}
                 | {"plan": r["plan"].to_list()} for r in rows]}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
