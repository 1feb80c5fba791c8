"""LowDiff fine-tuned from a trained EDM model (issue 38): the FID of each snapshot of one
fine-tuning run against its training compute, beside the LowDiff cascade trained from scratch and
the EDM model the run started from. Writes the section "finetune" of docs/results.md,
docs/results/finetune.json and docs/img/finetune-fid-vs-compute.png; FIDs are cached in
docs/results/finetune-cache.json (an interrupted run resumes).

One run gives every budget: snapshot k of `--snapshot-kimg N` holds the EMA a run of
`--duration-kimg` k x N saves (lowdiff/train/snapshots.py). The commands (one thread each):

    lowdiff eval ref --data fashion-mnist:test --out runs/fashion-test.npz
    lowdiff train --preset lowdiff-fashion-tiny-cond --init-from bundled:fashion-edm-cond --data fashion-mnist --out runs/ft-fashion --duration-kimg 40 --snapshot-kimg 5
    lowdiff eval ref --data cifar10-jpeg-test.zip --out runs/cifar-test.npz
    lowdiff train --preset lowdiff-cifar-tiny-cond --init-from bundled:cifar-edm-cond --data cifar10-jpeg-train.zip --out runs/ft-cifar --duration-kimg 20 --snapshot-kimg 5
    python benchmarks/finetune.py --paper-kimg fashion:20 fashion:40 cifar:25 --fast-kimg fashion:5 fashion:10 fashion:20 fashion:30 fashion:40 cifar:5 cifar:10 cifar:15 cifar:20 cifar:25

The latent pair (the LowDiff DiT from the flow DiT; config.json plans, as the latent models ship no
tuned ones) in its own section:

    lowdiff dataset encode fashion-mnist --vae bundled:fashion-vae --lowest 4 --out runs/fashion-latents
    lowdiff train --preset lowdiff-fashion-latent-tiny --init-from bundled:fashion-latent-flow --data runs/fashion-latents --out runs/ft-latent --duration-kimg 20 --snapshot-kimg 5
    python benchmarks/finetune.py --pairs latent --paper-kimg latent:5 latent:10 latent:20 --tag finetune-latent \
        --heading "Fine-tuning the latent LowDiff DiT from the flow DiT (issue 38)" \
        --json docs/results/finetune-latent.json --plot docs/img/finetune-latent.png

FID: bundled classifier features, 2,000 samples, seeds 100000-101999, against the test set, with
two plans per snapshot: the paper's (the preset's own, config.json) and the `fast` plan tuned for
the from-scratch cascade (its plans.json). The from-scratch cascade's and the EDM model's FIDs use
the same seeds and reference; they are read from the frontier's FID caches when these hold the
same key (same plan, seeds and reference statistics), else measured. Compute: images x the
preset's training FLOPs per image (`lowdiff info`), the fine-tuning's from its snapshots'
compute.json, the bundled models' from the record of their run they keep (training.json).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from lowdiff import storage
from lowdiff.eval.evaluate import get_extractor
from lowdiff.pipeline import Pipeline
from lowdiff.train.compute import model_compute
from lowdiff.train.snapshots import list_snapshots

from _markdown import write_section
from frontier import known_or_measured_fid, reference_name

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
FRONTIER_CACHES = [RESULTS / "frontier-cache.json", RESULTS / "frontier-cifar-cache.json"]
PLANS = ("paper", "fast")                   # the paper plan; the from-scratch cascade's tuned fast plan
EDM_PLAN = "best"                           # the EDM model's best tuned plan


@dataclass
class Pair:
    title: str
    run: str                                # the fine-tuning run (--out of `lowdiff train --snapshot-kimg`)
    ref: str
    scratch: str                            # the LowDiff cascade trained from scratch
    edm: str                                # the model the fine-tuning started from
    channels: int
    plans: dict = field(default_factory=lambda: {p: p for p in PLANS})   # column -> the scratch model's plan name
    edm_plan: str = EDM_PLAN
    fid_noise: float | None = None          # None: the scratch model's recorded FID noise (plans.json)


PAIRS = {"fashion": Pair("Fashion-MNIST", "runs/ft-fashion", "runs/fashion-test.npz", "bundled:fashion-lowdiff-cond",
                         "bundled:fashion-edm-cond", 1),
         "cifar": Pair("CIFAR-10", "runs/ft-cifar", "runs/cifar-test.npz", "bundled:cifar-lowdiff-cond",
                       "bundled:cifar-edm-cond", 3),
         # the latent pair ships no tuned plans: its config.json plans (unguided), the pixel Fashion pair's noise
         "latent": Pair("Fashion-MNIST latent: the LowDiff DiT from the flow DiT (its 'EDM' rows), f4 VAE, "
                        "4x4 -> 8x8 latents", "runs/ft-latent", "runs/fashion-test.npz", "bundled:fashion-latent-lowdiff",
                        "bundled:fashion-latent-flow", 1, plans={"paper": "config"}, edm_plan="config", fid_noise=0.200)}


def fid(pipe, spec, plan, args, extractor, measure: bool) -> float | None:
    """The cached FID of `pipe` with `plan` (this benchmark's cache, then the frontier's); measured
    (and cached) when absent and `measure`, else None."""
    return known_or_measured_fid(spec, plan, args, extractor, lambda: pipe, measure, FRONTIER_CACHES)


def measure_pair(name: str, pair: Pair, args) -> dict:
    args.ref = str(ROOT / pair.ref)
    args.ref_name = reference_name(args.ref)
    extractor = get_extractor("classifier", channels=pair.channels, ref=args.ref)
    scratch, edm = Pipeline.from_pretrained(pair.scratch), Pipeline.from_pretrained(pair.edm)
    plans = {p: scratch.plans.get(name).stages for p, name in pair.plans.items()}
    noise = scratch.plans.fid_noise if pair.fid_noise is None else pair.fid_noise
    out = {"title": pair.title, "run": pair.run, "snapshots": [], "fid_noise": noise,
           "scratch": {"spec": pair.scratch, **model_compute(pair.scratch),
                       "fid": {p: fid(scratch, pair.scratch, plans[p], args, extractor, True) for p in plans}},
           "edm": {"spec": pair.edm, **model_compute(pair.edm), "plan": pair.edm_plan,
                   "fid": fid(edm, pair.edm, edm.plans.get(pair.edm_plan).stages, args, extractor, True)}}
    for directory, compute in list_snapshots(ROOT / pair.run):
        pipe = Pipeline.from_pretrained(directory)
        spec = f"{directory.relative_to(ROOT)}@{storage.read_config(directory)[1][:12]}"   # the weights' SHA-256
        budget = float(directory.name.removeprefix("kimg-"))
        wanted = {"paper": args.paper_kimg, "fast": args.fast_kimg}
        fids = {p: fid(pipe, spec, plans[p], args, extractor, is_wanted(wanted[p], name, budget)) for p in plans}
        out["snapshots"].append({"dir": str(directory.relative_to(ROOT)), "budget_kimg": budget, **compute,
                                 "fid": fids})
        print(f"{name} {directory.name}: {compute['train_tflop']:.1f} TFLOP, FID {fids}", file=sys.stderr, flush=True)
    out["aim"] = {p: aim(out, p) for p in plans}
    return out


def is_wanted(budgets: list[str] | None, pair: str, kimg: float) -> bool:
    """Whether the snapshot of `kimg` of `pair` is measured: no list = all; items KIMG (every pair) or PAIR:KIMG."""
    return budgets is None or f"{kimg:g}" in budgets or f"{pair}:{kimg:g}" in budgets


def aim(result: dict, plan: str) -> dict:
    """The cheapest snapshot whose FID is within the FID noise of the from-scratch cascade's (same
    plan), and whether it cost a quarter of the from-scratch compute or less."""
    target, scratch = result["scratch"]["fid"][plan] + result["fid_noise"], result["scratch"]["train_tflop"]
    hits = [s for s in result["snapshots"] if s["fid"][plan] is not None and s["fid"][plan] <= target]
    quarter = lambda s: round(s["train_tflop"] / scratch, 2) <= 0.25     # a snapshot overshoots by < 1 batch
    unmeasured = any(s["fid"][plan] is None and quarter(s) for s in result["snapshots"])
    if not hits:
        return {"met": False, "snapshot": None, "unmeasured_within_quarter": unmeasured}
    first = min(hits, key=lambda s: s["train_tflop"])
    share = first["train_tflop"] / scratch
    return {"met": quarter(first), "snapshot": first["dir"], "share_of_scratch": share,
            "unmeasured_within_quarter": unmeasured}


def cell(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.3f}"


def column(fids: dict, plan: str) -> str:
    """A FID cell of `plan`; a dash where the pair has no such plan (the latent pair ships no `fast`)."""
    return cell(fids[plan]) if plan in fids else "-"


def markdown(results: dict, args, command: str) -> str:
    lines = [f"## {args.heading}", "",
             f"Measured {date.today().isoformat()} on the development machine (one CPU thread per job). "
             f"`lowdiff train --init-from` starts the cascade from the bundled EDM model (at step 0 its 32x32 stage "
             "is that model's denoiser), then trains it as usual with the preset's recipe; `--snapshot-kimg` saves "
             "the EMA every N kimg. The learning-rate ramp, the EMA half-life and its ramp-up, the data order and "
             "the noise depend only on the images seen, never on the run's length, so snapshot k is the model a "
             "separate run of that budget saves (tested, `tests/test_snapshots.py`): one run gives every budget. "
             f"FID: bundled classifier features, {args.num} samples, seeds {args.seed}-{args.seed + args.num - 1}, "
             "against the 10,000 test images, fp32 weights of the snapshots (the bundled models are fp16). Plans: "
             "`paper` (the preset's own) and `fast`, the plan tuned for the from-scratch cascade "
             "(its plans.json). Compute: images x the preset's training FLOPs per image (`lowdiff info`: forward + "
             "backward at every stage resolution); the from-scratch cascade's and the EDM model's from the record "
             "of their run they keep (training.json). One-thread seconds are the fine-tuning's own (shared 2-core machine). "
             f"Command: `{command}`.", ""]
    for r in results.values():
        s, e = r["scratch"], r["edm"]
        lines += [f"### {r['title']}", "",
                  f"From-scratch LowDiff `{s['spec']}`: {s['kimg']:g} kimg = {s['train_tflop']:.1f} TFLOP. EDM model "
                  f"`{e['spec']}`: {e['kimg']:g} kimg = {e['train_tflop']:.1f} TFLOP of pretraining, already paid "
                  f"by whoever owns it. FID noise (the frontier's seed-to-seed spread): {r['fid_noise']:.3f}.", "",
                  "| model | kimg | TFLOP | share of from-scratch | with EDM pretraining | one-thread s | "
                  "FID paper plan | FID fast plan |", "|---|---|---|---|---|---|---|---|"]
        for snap in r["snapshots"]:
            t = snap["train_tflop"]
            lines.append(f"| fine-tuned, `{Path(snap['dir']).name}` | {snap['kimg']:g} | {t:.1f} | "
                         f"{t / s['train_tflop']:.0%} | {(t + e['train_tflop']) / s['train_tflop']:.0%} | "
                         f"{snap['thread_seconds']:.0f} | {column(snap['fid'], 'paper')} | {column(snap['fid'], 'fast')} |")
        lines.append(f"| from scratch `{s['spec']}` | {s['kimg']:g} | {s['train_tflop']:.1f} | 100% | | | "
                     f"{column(s['fid'], 'paper')} | {column(s['fid'], 'fast')} |")
        lines.append(f"| EDM `{e['spec']}`, its `{e['plan']}` plan | {e['kimg']:g} | {e['train_tflop']:.1f} | | | | "
                     f"{cell(e['fid'])} | |")
        lines += ["", verdict(r), ""]
    lines += [f"![FID against training compute]({os.path.relpath(args.plot, Path(args.out).parent)})", ""]
    return "\n".join(lines)


def verdict(r: dict) -> str:
    """Whether the aim (from-scratch FID within the noise at <= 1/4 of its compute) is met, per plan."""
    out = []
    for plan in r["aim"]:
        a = r["aim"][plan]
        if a["snapshot"] is None:
            out.append(f"`{plan}` plan: no snapshot within {r['fid_noise']:.3f} of the from-scratch FID "
                       f"{cell(r['scratch']['fid'][plan])}.")
        else:
            out.append(f"`{plan}` plan: the cheapest measured snapshot within the noise of the from-scratch FID "
                       f"(or below it) is `{Path(a['snapshot']).name}`, at {a['share_of_scratch']:.0%} of its "
                       f"compute: aim {'met' if a['met'] else 'not met'}"
                       + (" at the snapshots measured with it" if a["unmeasured_within_quarter"] and not a["met"] else "")
                       + ".")
    return "**Aim** (from-scratch FID within the noise at a quarter of its compute or less): " + " ".join(out)


def plot(results: dict, path: Path, num: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.ticker
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 6), squeeze=False)
    for ax, r in zip(axes[0], results.values()):
        s, e = r["scratch"], r["edm"]
        for plan, color in zip(r["aim"], ("tab:blue", "tab:orange")):
            pts = [(snap["train_tflop"], snap["fid"][plan]) for snap in r["snapshots"] if snap["fid"][plan] is not None]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, "o-", color=color, label=f"fine-tuned from EDM, {plan} plan")
                ax.plot([v + e["train_tflop"] for v in x], y, "o--", color=color, alpha=0.4,
                        label=f"the same, counting EDM's pretraining ({e['train_tflop']:.0f} TFLOP)")
            ax.plot([s["train_tflop"]], [s["fid"][plan]], "*", ms=14, color=color, label=f"from scratch, {plan} plan")
            ax.axhspan(s["fid"][plan] - r["fid_noise"], s["fid"][plan] + r["fid_noise"], color=color, alpha=0.08)
        ax.axhline(e["fid"], color="gray", ls=":", label=f"EDM model, its {e['plan']} plan")
        ax.axvline(s["train_tflop"] / 4, color="green", ls="-.", alpha=0.6, label="aim: 1/4 of from-scratch compute")
        ax.set_xscale("log")
        ax.set_xlabel("training compute (TFLOP)")
        ax.set_ylabel(f"FID (classifier features, {num} samples)")
        ax.set_title(r["title"])
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", nargs="+", choices=sorted(PAIRS), default=sorted(PAIRS),
                   help="pairs to report (those whose run directory exists)")
    p.add_argument("--paper-kimg", dest="paper_kimg", nargs="*", metavar="[PAIR:]KIMG",
                   help="snapshot budgets measured with the paper plan, e.g. 40 or fashion:20 (default: all; the "
                   "others are read from the cache or left out)")
    p.add_argument("--fast-kimg", dest="fast_kimg", nargs="*", metavar="[PAIR:]KIMG",
                   help="snapshot budgets measured with the fast plan (default: all)")
    p.add_argument("--num", type=int, default=2000)
    p.add_argument("--seed", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--cache", default=str(RESULTS / "finetune-cache.json"))
    p.add_argument("--out", default=str(ROOT / "docs" / "results.md"))
    p.add_argument("--json", default=str(RESULTS / "finetune.json"))
    p.add_argument("--plot", default=str(ROOT / "docs" / "img" / "finetune-fid-vs-compute.png"))
    p.add_argument("--tag", default="finetune", help="section tag in --out")
    p.add_argument("--heading", default="Fine-tuning LowDiff from the EDM model (issue 38)")
    args = p.parse_args()
    command = "python benchmarks/finetune.py " + shlex.join(sys.argv[1:])
    present = [n for n in args.pairs if (ROOT / PAIRS[n].run).is_dir()]
    if not present:
        sys.exit("no run directory of the chosen pairs exists (" + ", ".join(PAIRS[n].run for n in args.pairs) +
                 "): train them with the commands in this script's docstring first")
    results = {n: measure_pair(n, PAIRS[n], args) for n in present}
    text = markdown(results, args, command)
    write_section(Path(args.out), args.tag, text)
    Path(args.json).write_text(json.dumps({"command": command, "num": args.num, "seed": args.seed,
                                           "pairs": results}, indent=1))
    plot(results, Path(args.plot), args.num)
    print(text)


if __name__ == "__main__":
    main()
