"""The Fashion-MNIST study of docs/results.md: LowDiff against its EDM baseline trained with
the same image budget, in the paper's table forms.

    python benchmarks/fashion_study.py --lowdiff runs/fm-lowdiff-cond --baseline runs/fm-edm-cond \
        --num 10000 --sweep-num 1000

Measures, all in the offline classifier's feature space against the Fashion-MNIST test set:
  * FID / IS of both models at their preset plans (paper Table 2), seeds [0, num);
  * sampling throughput of both, timed alternately in one process (paper Table 5);
  * FID vs high-resolution NFE for both models (the plot), seeds [0, sweep_num);
  * the truncation-point sweep of the low-resolution stages (paper Table 11).
Writes the tables into the `<!-- TAG -->` section of docs/results.md, the raw numbers to
docs/results/TAG.json and the plot to docs/img/TAG-fid-vs-nfe.png (TAG: --tag, default
fashion-study; the unconditional pair uses --tag fashion-study-uncond). Empty --*-steps /
--trunc* lists skip those sweeps.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import torch

import lowdiff
from lowdiff.eval.bench import BenchOptions, bench
from lowdiff.eval.evaluate import evaluate_pipeline, get_extractor, reference_stats

from _markdown import write_section

ROOT = Path(__file__).resolve().parents[1]


def plan_with(stages, res: int, **changes):
    return stages.replace(stages.index(res), **changes)


def final_nfe(stages) -> int:
    return stages.nfe(-1)


CACHE = ROOT / "docs" / "results" / "fashion-study-cache.json"


def fid(run: str, pipe, stages, args, extractor, num: int) -> dict:
    """FID / IS of `pipe` with plan `stages` for seeds [0, num); cached by model and plan so
    that an interrupted study resumes and parts can run separately (--only)."""
    key = json.dumps([str(Path(run).resolve()), [s.__dict__ for s in stages], num], sort_keys=True)
    cache = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    if key in cache:
        return cache[key]
    t = time.perf_counter()
    ev = evaluate_pipeline(pipe, args.ref, extractor, "classifier", num=num, seed=0, stages=stages,
                           batch=args.batch, progress=False)
    row = {"fid": ev.fid, "is": ev.inception_score[0] if ev.inception_score else None, "num": num,
           "nfe": list(stages.nfe_per_stage.values()),
           "seconds": time.perf_counter() - t}
    print(json.dumps(row), file=sys.stderr, flush=True)
    cache = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    cache[key] = row
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    CACHE.write_text(json.dumps(cache, indent=1))
    return row


def feature_space(args):
    """The classifier feature extractor, with the test set's reference statistics at args.ref."""
    torch.set_num_threads(args.threads)
    extractor = get_extractor("classifier", args.classifier)
    if not Path(args.ref).exists():
        reference_stats("fashion-mnist", args.ref, extractor, "classifier", split="test", progress=False)
    return extractor


def has_sweep(out: dict) -> bool:
    return bool(out["nfe_sweep"]["baseline"] or out["nfe_sweep"]["lowdiff"])


def run(args) -> dict:
    extractor = feature_space(args)
    parts = [args.only] if args.only else ["baseline", "lowdiff"]
    runs = {k: (getattr(args, k), lowdiff.load(getattr(args, k))) for k in parts}
    out: dict = {"date": date.today().isoformat(), "threads": args.threads, "num": args.num,
                 "sweep_num": args.sweep_num, **{k: runs[k][1].preset.name for k in parts}}
    out["main"] = {k: fid(*runs[k], runs[k][1].preset.stages, args, extractor, args.num) for k in parts}
    out["nfe_sweep"] = {"lowdiff": [], "baseline": []}
    for name in parts:
        run_dir, pipe = runs[name]
        top = pipe.preset.stages[-1].resolution
        for steps in (args.lowdiff_steps if name == "lowdiff" else args.baseline_steps):
            stages = plan_with(pipe.preset.stages, top, steps=steps)
            out["nfe_sweep"][name].append(dict(fid(run_dir, pipe, stages, args, extractor, args.sweep_num),
                                               steps=steps))
    if args.only == "baseline":
        return out
    low = runs["lowdiff"][1]
    if not args.only:                                        # timing wants a quiet machine: full runs only
        opts = BenchOptions(batch=args.bench_batch, repeats=args.bench_repeats, device="cpu")
        out["bench"] = bench(low.preset, opts)
    # Truncation points (paper Table 11): NFE spent in the 8x8 and 16x16 stages.
    out["truncation"] = []
    preset_pair = (low.preset.stages[0].nfe, low.preset.stages[1].nfe)
    pairs = [(a, b) for a in args.trunc8 for b in args.trunc16]
    for nfe8, nfe16 in sorted(set(pairs) | {preset_pair}) if pairs else []:
        stages = plan_with(plan_with(low.preset.stages, 8, nfe=nfe8), 16, nfe=nfe16)
        out["truncation"].append(dict(fid(args.lowdiff, low, stages, args, extractor, args.sweep_num),
                                      nfe8=nfe8, nfe16=nfe16))
    return out


def plot(out: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, style in (("baseline", "s--"), ("lowdiff", "o-")):
        rows = out["nfe_sweep"][name]
        ax.plot([r["nfe"][-1] for r in rows], [r["fid"] for r in rows], style,
                label=f"{out[name]} ({'EDM' if name == 'baseline' else 'LowDiff'})")
    ax.set_xlabel("NFE at 32x32")
    ax.set_ylabel(f"FID (classifier features, {out['sweep_num']} samples)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def markdown(out: dict, command: str, tag: str) -> str:
    m, b = out["main"], out["bench"]
    lo, ba = b["lowdiff"], b["baseline"]
    L = [f"Generated by `{command}` on {out['date']} ({b['device']}; sampling and FID with "
         f"{out['threads']} threads).", "",
         f"### FID / IS and throughput (paper Tables 2 and 5 form; {out['num']} samples, seeds 0-{out['num'] - 1})", "",
         "| model | NFE per stage | NFE at 32x32 | effective NFE (measured) | FID | IS | img/s (batch "
         f"{b['batch']}) | throughput ratio |", "|---|---|---|---|---|---|---|---|"]
    for key, bb in (("baseline", ba), ("lowdiff", lo)):
        r = m[key]
        ratio = f"**{b['throughput_ratio']:.2f}x**" if key == "lowdiff" else "1.00x"
        L.append(f"| {out[key]} | {'/'.join(map(str, r['nfe']))} | {r['nfe'][-1]} | {bb['effective_nfe']} | "
                 f"{r['fid']:.3f} | {r['is']:.2f} | {bb['images_per_s']:.2f} | {ratio} |")
    if not has_sweep(out):
        return "\n".join(L) + "\n"
    L += ["", f"### FID vs NFE at 32x32 ({out['sweep_num']} samples)", "",
          f"![FID vs high-resolution NFE](img/{tag}-fid-vs-nfe.png)", "",
          "| model | final-stage Heun steps | NFE per stage | FID | IS |", "|---|---|---|---|---|"]
    for key in ("baseline", "lowdiff"):
        for r in out["nfe_sweep"][key]:
            L.append(f"| {out[key]} | {r['steps']} | {'/'.join(map(str, r['nfe']))} | {r['fid']:.3f} | {r['is']:.2f} |")
    if not out["truncation"]:
        return "\n".join(L) + "\n"
    L += ["", f"### Truncation points (paper Table 11 form; {out['sweep_num']} samples)", "",
          "NFE spent in the 8x8 and 16x16 stages before truncating; the 32x32 stage is unchanged.", "",
          "| NFE 8x8 | NFE 16x16 | FID | IS |", "|---|---|---|---|"]
    for r in out["truncation"]:
        mark = " (preset)" if r["nfe"][:2] == out["main"]["lowdiff"]["nfe"][:2] else ""
        L.append(f"| {r['nfe8']}{mark} | {r['nfe16']}{mark} | {r['fid']:.3f} | {r['is']:.2f} |")
    return "\n".join(L) + "\n"


def write(out: dict, command: str, tag: str) -> None:
    (ROOT / "docs" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "docs" / "results" / f"{tag}.json").write_text(json.dumps(out, indent=1, default=str))
    if has_sweep(out):
        plot(out, ROOT / "docs" / "img" / f"{tag}-fid-vs-nfe.png")
    block = markdown(out, command, tag)
    write_section(ROOT / "docs" / "results.md", tag, block, title="# Results\n\n")
    print(block)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lowdiff", required=True, help="trained LowDiff run directory")
    p.add_argument("--baseline", required=True, help="trained EDM baseline run directory")
    p.add_argument("--classifier", help="classifier directory (default: lowdiff eval's, the bundled one)")
    p.add_argument("--ref", default="runs/fashion-test-ref.npz", help="reference stats (computed if missing)")
    p.add_argument("--num", type=int, default=10_000, help="samples for the main FID table")
    p.add_argument("--sweep-num", type=int, default=1000, help="samples per sweep point")
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bench-batch", type=int, default=64)
    p.add_argument("--bench-repeats", type=int, default=3)
    p.add_argument("--lowdiff-steps", type=int, nargs="*", default=[3, 5, 7, 9, 13])
    p.add_argument("--baseline-steps", type=int, nargs="*", default=[5, 7, 9, 13, 18])
    p.add_argument("--trunc8", type=int, nargs="*", default=[14, 18, 22])
    p.add_argument("--trunc16", type=int, nargs="*", default=[9, 13, 16])
    p.add_argument("--tag", default="fashion-study", help="docs section / output file name")
    p.add_argument("--only", choices=["baseline", "lowdiff"], help="measure one model's FIDs only (cached)")
    p.add_argument("--from-json", help="only re-render docs from a saved TAG.json")
    args = p.parse_args()
    command = "python benchmarks/fashion_study.py " + " ".join(sys.argv[1:])
    out = json.loads(Path(args.from_json).read_text()) if args.from_json else dict(run(args), command=command)
    if args.only:
        print(json.dumps(out, indent=1, default=str))
        return
    write(out, out.get("command", command), args.tag)


if __name__ == "__main__":
    main()
