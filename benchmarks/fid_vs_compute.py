"""FID against training compute (issue 36, item 3): the EMA snapshots of four runs (Fashion-MNIST
and CIFAR-10, class-conditional; EDM and the LowDiff cascade at EDM's training FLOPs), each scored
with two plans fixed across its snapshots: (a) the paper's (EDM: Heun, 18 steps, 35 NFE; LowDiff:
the preset's 3-stage Heun plan) and (b) the family's best tuned plan (the `best` plan its bundled
equal-images model ships, docs/benchmarks.md). Writes the section `fid-vs-compute` of
docs/results.md, docs/results/fid-vs-compute.json and docs/img/fid-vs-compute-{fashion,cifar}.png;
FIDs are cached in docs/results/fid-vs-compute-cache.json (an interrupted run resumes).

The runs (one thread each; `--snapshot-kimg` saves the EMA every 10 kimg, and as nothing in
training depends on the run's length, snapshot k is the model a run of k x 10 kimg saves):

    lowdiff train --preset edm-fashion-tiny-cond --data fashion-mnist --out runs/fm-edm-snap --snapshot-kimg 10
    lowdiff train --preset lowdiff-fashion-tiny-cond --data fashion-mnist --out runs/fm-lowdiff-eqc \\
        --match-compute bundled:fashion-edm-cond --snapshot-kimg 10
    lowdiff train --preset edm-cifar-tiny-cond --data cifar10-jpeg-train.zip --out runs/cifar-edm-snap --snapshot-kimg 10
    lowdiff train --preset lowdiff-cifar-tiny-cond --data cifar10-jpeg-train.zip --out runs/cifar-lowdiff-eqc \\
        --match-compute bundled:cifar-edm-cond --snapshot-kimg 10
    lowdiff eval ref --data fashion-mnist:test --out runs/fashion-test.npz
    lowdiff eval ref --data cifar10-jpeg-test.zip --out runs/cifar-test.npz
    python benchmarks/fid_vs_compute.py

A LowDiff curve goes on past EDM's compute with the bundled equal-images cascade: the same command
and seed run to EDM's image count instead of its FLOPs (so a later point of the same run).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shlex
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

from lowdiff import storage
from lowdiff.eval.evaluate import get_extractor
from lowdiff.pipeline import Pipeline
from lowdiff.train.compute import model_compute
from lowdiff.train.snapshots import list_snapshots

from _markdown import write_section
from frontier import known_or_measured_fid, reference_name

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
PLANS = {"paper": "paper", "tuned": "best"}      # column -> the plan name in the bundled model's plans.json
FAMILIES = ("edm", "lowdiff")
LONGER = "bundled, longer"                       # the label of a bundled model of the same command run longer


@dataclass
class Run:
    dataset: str                    # fashion | cifar
    family: str                     # edm | lowdiff
    directory: str                  # the run's --out
    plans_from: str                 # the bundled model whose named plans score every snapshot
    longer: str | None = None       # a bundled model of the same command run longer, if any


DATASETS = {"fashion": ("Fashion-MNIST", "runs/fashion-test.npz", 1),
            "cifar": ("CIFAR-10", "runs/cifar-test.npz", 3)}
RUNS = [Run("fashion", "edm", "runs/fm-edm-snap", "bundled:fashion-edm-cond"),
        Run("fashion", "lowdiff", "runs/fm-lowdiff-eqc", "bundled:fashion-lowdiff-cond", "bundled:fashion-lowdiff-cond"),
        # the bundled CIFAR-10 EDM model's 100 kimg: its run is repeated to 60 kimg for the snapshots
        Run("cifar", "edm", "runs/cifar-edm-snap", "bundled:cifar-edm-cond", "bundled:cifar-edm-cond"),
        Run("cifar", "lowdiff", "runs/cifar-lowdiff-eqc", "bundled:cifar-lowdiff-cond", "bundled:cifar-lowdiff-cond")]


def points(run: Run) -> list[tuple[str, str, dict]]:
    """(label, model directory or bundled name, compute) of every model of the run in training
    order: its snapshots, its final model, then the bundled model of the same command run longer."""
    out = [(d.name, str(d), c) for d, c in list_snapshots(ROOT / run.directory)]
    final = ROOT / run.directory
    if (final / storage.MODEL_FILE).is_file():
        c = model_compute(final)
        if not out or c["kimg"] > out[-1][2]["kimg"] + 1e-6:
            out.append(("final", str(final), c))
    if run.longer:
        out.append((LONGER, run.longer, model_compute(run.longer)))
    return out


def spec(model: str) -> str:
    """The FID cache's name of a model: a bundled name, or a directory and its weights' SHA-256."""
    if model.startswith("bundled:"):
        return model
    sha = storage.read_config(model)[1] or "unrecorded"
    return f"{os.path.relpath(model, ROOT)}@{sha[:12]}"


def wanted(budgets: list[str] | None, family: str, kimg: float) -> bool:
    """Whether the point at `kimg` of a `family` run is measured: no list = all; items KIMG (every
    family) or FAMILY:KIMG, within 0.1 kimg (a snapshot overshoots its budget by less than a batch)."""
    if budgets is None:
        return True
    items = [b.rpartition(":") for b in budgets]
    return any(f in ("", family) and abs(kimg - float(k)) < 0.1 for f, _, k in items)


def measure(run: Run, args) -> dict:
    _, ref, channels = DATASETS[run.dataset]
    args.ref = str(ROOT / ref)
    args.ref_name = reference_name(args.ref)
    extractor = get_extractor("classifier", channels=channels, ref=args.ref)
    named = Pipeline.from_pretrained(run.plans_from).plans
    plans = {col: named.get(name).stages for col, name in PLANS.items()}
    budgets = {"paper": args.paper_kimg, "tuned": args.tuned_kimg}
    rows = []
    for label, model, compute in points(run):
        load = functools.cache(lambda model=model: Pipeline.from_pretrained(model))
        fids = {col: known_or_measured_fid(spec(model), plan, args, extractor, load,
                                           wanted(budgets[col], run.family, compute["kimg"]) and not args.only_cached)
                for col, plan in plans.items()}
        rows.append({"label": label, "model": os.path.relpath(model, ROOT) if not model.startswith("bundled:") else model,
                     **{k: compute.get(k) for k in ("kimg", "train_tflop", "thread_seconds")}, "fid": fids})
        print(f"{run.dataset} {run.family} {label}: {compute['train_tflop']:.1f} TFLOP, FID {fids}",
              file=sys.stderr, flush=True)
    return {"dataset": run.dataset, "family": run.family, "run": run.directory, "plans_from": run.plans_from,
            "plans": {col: f"{run.plans_from} `{name}`" for col, name in PLANS.items()}, "rows": rows}


MATCH = 0.01      # a budget within 1% of a curve's end point is matched to it (a run sized by --match-compute)


def interpolated(curve: dict, col: str, tflop: float) -> float | None:
    """The curve's FID at `tflop` (linear between its measured points; an end point's within MATCH),
    None outside them."""
    pts = sorted((r["train_tflop"], r["fid"][col]) for r in curve["rows"] if r["fid"][col] is not None)
    if not pts or not pts[0][0] * (1 - MATCH) <= tflop <= pts[-1][0] * (1 + MATCH):
        return None
    x, y = zip(*pts)
    return float(np.interp(tflop, x, y))


def cell(v: float | None, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


def table(curves: dict) -> list[str]:
    """One dataset's measured points of both families; each LowDiff point with EDM's FID at its
    compute (interpolated) and the difference (negative: the cascade is better at that compute)."""
    lines = ["| family | model | kimg | TFLOP | FID paper plan | FID tuned plan | EDM at this TFLOP: paper, tuned | "
             "LowDiff - EDM: paper, tuned |", "|---|---|---|---|---|---|---|---|"]
    for family in FAMILIES:
        for r in (r for r in curves[family]["rows"] if any(v is not None for v in r["fid"].values())):
            t, f = r["train_tflop"], r["fid"]
            edm = [interpolated(curves["edm"], c, t) for c in PLANS] if family == "lowdiff" else [None, None]
            gap = [None if e is None or f[c] is None else f[c] - e for c, e in zip(PLANS, edm)]
            name = f"`{r['model']}`" + (f" ({r['label']})" if r["label"] in ("final", LONGER) else "")
            lines.append(f"| {family} | {name} | {r['kimg']:g} | {t:.1f} | "
                         f"{cell(f['paper'])} | {cell(f['tuned'])} | {cell(edm[0])}, {cell(edm[1])} | "
                         f"{cell(gap[0], '+.2f')}, {cell(gap[1], '+.2f')} |")
    return lines


def markdown(results: dict, args, command: str) -> str:
    lines = ["## FID against training compute (issue 36)", "",
             f"Measured {date.today().isoformat()} on the development machine (one CPU thread per job). "
             f"FID: bundled classifier features, {args.num} samples, seeds {args.seed}-{args.seed + args.num - 1}, "
             "against the 10,000 test images; fp32 weights of the snapshots (the bundled models are fp16). Compute: "
             "images x the preset's training FLOPs per image (`lowdiff info`: forward + backward at every stage "
             "resolution), from each snapshot's compute.json, a run's log or a bundled model's training.json. "
             "Plans, fixed across a run's snapshots: `paper` (EDM: Heun 18 steps, 35 NFE; LowDiff: the preset's "
             "3-stage Heun plan) and `tuned` (the family's best tuned plan, the `best` plan its bundled model ships). "
             f"The `{LONGER}` points are bundled models of the same command and seed run longer: LowDiff's to "
             "EDM's image count rather than its FLOPs (the equal-images cascade), CIFAR-10 EDM's to its 100 kimg (its "
             "snapshot run stopped at 60 kimg; the Fashion-MNIST EDM run repeated to 80 kimg checks that a repeated "
             "command gives the bundled weights). `EDM at this TFLOP` interpolates EDM's curve linearly between its "
             f"measured points. Command: `{command}`.", ""]
    for dataset, curves in results.items():
        if set(curves) != set(FAMILIES):
            continue
        lines += [f"### {DATASETS[dataset][0]}", "", *table(curves), "",
                  f"![FID against training compute, {DATASETS[dataset][0]}]"
                  f"({os.path.relpath(plot_path(args, dataset), Path(args.out).parent)})", ""]
    return "\n".join(lines)


def plot_path(args, dataset: str) -> Path:
    return Path(args.plot_dir) / f"fid-vs-compute-{dataset}.png"


def plot(curves: dict, path: Path, title: str, num: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(PLANS), figsize=(6.5 * len(PLANS), 4.8), squeeze=False)
    for ax, col in zip(axes[0], PLANS):
        for family, color in zip(FAMILIES, ("tab:gray", "tab:blue")):
            c = curves[family]
            pts = [(r["train_tflop"], r["fid"][col], r["label"]) for r in c["rows"] if r["fid"][col] is not None]
            run = [(x, y) for x, y, label in pts if label != LONGER]
            if run:
                ax.plot(*zip(*run), "o-", color=color, label=f"{family}: {c['plans'][col]}")
            for x, y, label in pts:
                if label == LONGER:
                    ax.plot([x], [y], "*", ms=13, color=color, label=f"{family}: bundled, the same command run longer")
                    if run:
                        ax.plot([run[-1][0], x], [run[-1][1], y], "--", color=color, alpha=0.5)
        ax.set_xlabel("training compute (TFLOP)")
        ax.set_ylabel(f"FID (classifier features, {num} samples)")
        ax.set_title(f"{title}: {col} plan")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=sorted(DATASETS))
    p.add_argument("--paper-kimg", nargs="*", metavar="[FAMILY:]KIMG",
                   help="budgets measured with the paper plan, e.g. 20 or edm:40 (default: every point; the others are read "
                   "from the cache or left out)")
    p.add_argument("--tuned-kimg", nargs="*", metavar="[FAMILY:]KIMG",
                   help="budgets measured with the tuned plan (default: every point)")
    p.add_argument("--only-cached", action="store_true", help="measure nothing: report what the cache holds")
    p.add_argument("--num", type=int, default=1000)
    p.add_argument("--seed", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--cache", default=str(RESULTS / "fid-vs-compute-cache.json"))
    p.add_argument("--out", default=str(ROOT / "docs" / "results.md"))
    p.add_argument("--json", default=str(RESULTS / "fid-vs-compute.json"))
    p.add_argument("--plot-dir", default=str(ROOT / "docs" / "img"))
    p.add_argument("--tag", default="fid-vs-compute")
    args = p.parse_args()
    command = "python benchmarks/fid_vs_compute.py " + shlex.join(sys.argv[1:])
    results: dict = {}
    for run in RUNS:
        if run.dataset in args.datasets and (ROOT / run.directory).is_dir():
            results.setdefault(run.dataset, {})[run.family] = measure(run, args)
    for dataset, curves in results.items():
        if set(curves) == set(FAMILIES):
            plot(curves, plot_path(args, dataset), DATASETS[dataset][0], args.num)
    text = markdown(results, args, command)
    write_section(Path(args.out), args.tag, text)
    Path(args.json).write_text(json.dumps({"command": command, "num": args.num, "seed": args.seed,
                                           "results": results}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
