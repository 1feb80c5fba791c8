"""Equal training compute (issue 36): the LowDiff cascade trained on as many images as its EDM
baseline (equal images: more FLOPs, as its 8x8 and 16x16 levels train too) beside the cascade
trained at the baseline's training FLOPs (equal compute: fewer images, as the paper's 150M against
EDM's 200M), each from the frontier it was measured in (same protocol, same seeds, the baseline's
rows and FID noise of that frontier) and each model's training record (training.json or its log).
Writes the section `equal-compute` of docs/results.md and docs/results/equal-compute.json; one
table per dataset (Fashion-MNIST, CIFAR-10). The Fashion commands (CIFAR-10: the same with
`cifar` names, --match-compute bundled:cifar-edm-cond, budget 7, frontier-cifar-eqc):

    lowdiff train --preset lowdiff-fashion-tiny-cond --data fashion-mnist --out runs/fm-lowdiff-eqc \\
        --match-compute bundled:fashion-edm-cond --snapshot-kimg 10
    python scripts/bundle_model.py runs/fm-lowdiff-eqc fashion-lowdiff-cond-eqc
    lowdiff tune --checkpoint bundled:fashion-lowdiff-cond-eqc --ref runs/fashion-test.npz --budget-nfe 4 \\
        -n 500 --screen-num 200 --out docs/results/tuned-eqc-lowdiff-b4.json
    python benchmarks/frontier.py ... --lowdiff bundled:fashion-lowdiff-cond-eqc --tag frontier-eqc \\
        --json docs/results/frontier-eqc.json --plot docs/img/frontier-eqc.png   # the command in docs/benchmarks.md
    python benchmarks/equal_compute.py
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from lowdiff.train.compute import model_compute

from _markdown import write_section

ROOT = Path(__file__).resolve().parents[1]
PAPER_ROW = "paper plan, Heun"


def summary(frontier: dict) -> dict:
    """What one frontier says of its LowDiff model: the paper plan's FID, the best FID, and the
    first headline (against the tuned baseline, within the noise of its best FID)."""
    low = [r for r in frontier["rows"] if r["family"] == "lowdiff"]
    best = min(low, key=lambda r: r["fid"])
    h = frontier["headlines"][0]
    return {"paper_fid": next(r["fid"] for r in low if r["label"] == PAPER_ROW),
            "best_fid": best["fid"], "best_label": best["label"], "noise": frontier["noise"],
            "baseline_best_fid": h["baseline_best_fid"], "matched": h.get("lowdiff"), "ratio": h.get("ratio")}


def row(name: str, model: str, frontier_path: str) -> dict:
    return {"name": name, "model": model, "frontier": frontier_path, "compute": model_compute(model),
            **summary(json.loads(Path(frontier_path).read_text()))}


def markdown(tables: dict, command: str) -> str:
    lines = ["## Equal training compute: the cascade at its baseline's FLOPs", "",
             f"Command: `{command}`. Each LowDiff model's figures are those of the frontier it was measured in "
             "(docs/benchmarks.md; FID on 2,000 held-out samples in the bundled classifier's space, every row timed "
             "alternately in one process beside the same tuned EDM rows); compute from each model's training record "
             "(TFLOP = images x the preset's training FLOPs per image, forward + backward at every stage resolution).",
             ""]
    for title, (rows, baseline) in tables.items():
        lines += [f"### {title}", "", "| model | kimg | TFLOP | one-thread s | FID, paper plan | best FID (plan) | "
                  "matched to EDM's best FID: LowDiff row, img/s, FID | ratio |", "|---|---|---|---|---|---|---|---|"]
        c = baseline["compute"]
        lines.append(f"| EDM `{baseline['model']}` | {c['kimg']:g} | {c['train_tflop']:.1f} | "
                     f"{c.get('thread_seconds', float('nan')):.0f} | | {baseline['best_fid']:.3f} (tuned) | | 1x |")
        for r in rows:
            c, m = r["compute"], r["matched"]
            match = f"*{m['label']}*, {m['images_per_s']:.1f}, {m['fid']:.3f}" if m else "none within the noise"
            ratio = f"**{r['ratio']:.2f}x**" if r["ratio"] else "-"
            lines.append(f"| LowDiff, {r['name']} `{r['model']}` | {c['kimg']:g} | {c['train_tflop']:.1f} | "
                         f"{c.get('thread_seconds', float('nan')):.0f} | {r['paper_fid']:.3f} | {r['best_fid']:.3f} "
                         f"(*{r['best_label']}*) | {match} | {ratio} |")
        lines.append("")
    return "\n".join(lines)


# dataset -> (title, baseline, (equal-images model, its frontier), (equal-compute model, its frontier))
PAIRS = {"fashion": ("Fashion-MNIST", "bundled:fashion-edm-cond",
                     ("bundled:fashion-lowdiff-cond", "docs/results/frontier.json"),
                     ("bundled:fashion-lowdiff-cond-eqc", "docs/results/frontier-eqc.json")),
         "cifar": ("CIFAR-10", "bundled:cifar-edm-cond",
                   ("bundled:cifar-lowdiff-cond", "docs/results/frontier-cifar.json"),
                   ("bundled:cifar-lowdiff-cond-eqc", "docs/results/frontier-cifar-eqc.json"))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", nargs="+", choices=sorted(PAIRS), default=["fashion", "cifar"])
    p.add_argument("--out", default=str(ROOT / "docs" / "results.md"))
    p.add_argument("--json", default=str(ROOT / "docs" / "results" / "equal-compute.json"))
    p.add_argument("--tag", default="equal-compute")
    args = p.parse_args()
    command = "python benchmarks/equal_compute.py " + shlex.join(sys.argv[1:])
    tables, record = {}, {}
    for name in args.pairs:
        title, baseline, images, compute = PAIRS[name]
        rows = [row("equal images", *images), row("equal compute", *compute)]
        base = {"model": baseline, "compute": model_compute(baseline), "best_fid": rows[0]["baseline_best_fid"]}
        tables[title] = (rows, base)
        record[name] = {"baseline": base, "rows": rows}
    text = markdown(tables, command)
    write_section(Path(args.out), args.tag, text)
    Path(args.json).write_text(json.dumps({"command": command, "pairs": record}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
