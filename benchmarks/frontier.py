"""The headline benchmark: FID-vs-throughput fronts of LowDiff, of its single-resolution
baseline, and of the baseline sampled progressively (the training-free competitor: the same
network at lower resolutions first, `StageConfig.handover`), all tuned with the same tools, and
LowDiff's throughput at the best competitor's FID.

Both families sample over a grid of stage plans (EDM's Heun sampler, few-step DPM-Solver++
(2M) / (3M) plans, the plans `lowdiff tune` chose for each at the same budgets and cost
model) under the same two sets of switches, eager fp32 and compile + bf16 + channels_last.
Every point's FID uses the same seeds (held out from the tuner's) and `--num` samples in the
bundled classifier's feature space. The page states what each model's training spent (images,
TFLOP) from the record the model keeps, and whether that is equal images or equal compute.
Compilation and memory layout leave the samples unchanged up to rounding, so a fast row takes
the FID of eager samples at its precision (bf16), or with `--fast-fid fp32` the fp32 FID of its
plan (bf16 sampling is slow on CPUs without bf16 units; the page then lists the bf16 - fp32
differences measured so far). FIDs are cached
(docs/results/frontier-cache.json), so an interrupted run resumes. All rows are then timed
alternately in one process (batch --batch, mean of --repeats runs after warm-up).

The FID noise is the seed-to-seed spread of a sampled FID: the standard deviation of the FIDs
of the baseline's best plan on --noise-sets disjoint seed ranges of --num samples (the first is
the page's own seeds; the others follow it, all cached). Real training images are no probe of
it: a feature extractor trained on them sees them differently from the test images behind the
reference (on CIFAR-10 the bundled classifier puts 2,000-image training subsets 28-78 FID from
the test statistics). "Matched" means within that noise: the ratio is the throughput of
LowDiff's fastest row with FID <= (the baseline's best FID + noise) over the baseline's fastest
row with FID <= the same bound; against the best competitor, the bound is the best FID of the
baseline's and the progressive rows, and the ratio is over the fastest of those within it.

A pair of rectified-flow models (the latent pairs: a LightningDiT-style flow baseline and latent
LowDiff) gets flow grids instead: the baseline's Euler sampler at the preset's steps and fewer
and a two-evaluation solver (Heun) at the preset's NFE, LowDiff's preset plan (Euler) and its
DPM-Solver++(3M) twin, all guided with --cfg at noise levels <= --cfg-sigma-max (LightningDiT's
interval), and the tuned plans with their own guidance; no progressive or consistency-tuned
families. A latent model's FIDs are of decoded images, and its rows are timed with the VAE decode.

    lowdiff eval ref --data fashion-mnist:test --out runs/fashion-test.npz
    python benchmarks/frontier.py --ref runs/fashion-test.npz --fast-fid fp32 --batch 32 --repeats 2 \\
        --switches "eager fp32" \\
        --lowdiff-plans docs/results/tuned2-lowdiff-b9.json docs/results/tuned2-lowdiff-b6.json \\
            docs/results/tuned2-lowdiff-b4.json docs/results/tuned-lowdiff-b13.json \\
            docs/results/tuned-lowdiff-b9.json \\
        --baseline-plans docs/results/tuned2-edm-b13.json docs/results/tuned2-edm-b6.json \\
            docs/results/tuned2-edm-b5.json docs/results/tuned-edm-b13.json \\
        --progressive-plans docs/results/tuned-progressive-edm-b13.json \\
            docs/results/tuned-progressive-edm-b6.json
    python benchmarks/frontier.py --retime ...  # the same arguments: time again in a second process
    python benchmarks/frontier.py --replot      # redraw docs/img/frontier.png from the JSON

    # the latent frontier: the paper's geometry (8x8 -> 16x16), then the 4x4 -> 8x8 pair as an ablation
    P=docs/results
    python benchmarks/frontier.py --lowdiff bundled:fashion-latent16-lowdiff --baseline bundled:fashion-latent16-flow \\
        --lowdiff-plans $P/tuned-latent16-lowdiff-b22-cfg.json $P/tuned-latent16-lowdiff-b22.json \\
            $P/tuned-latent16-lowdiff-b14-cfg.json \\
        --baseline-plans $P/tuned-latent16-flow-b34.json $P/tuned-latent16-flow-b20-cfg.json \\
        --ref runs/fashion-test.npz --fast-fid fp32 --batch 32 --repeats 2 --switches "eager fp32" \\
        --cache $P/frontier-latent16-cache.json --tag frontier-latent --json $P/frontier-latent16.json \\
        --plot docs/img/frontier-latent16.png --lean --noise-sets 2 \\
        --title "Fashion-MNIST latents (16x16x1 of bundled:fashion-vae-f2), class-conditional"
    python benchmarks/frontier.py --lowdiff bundled:fashion-latent-lowdiff --baseline bundled:fashion-latent-flow \\
        --lowdiff-plans $P/tuned-latent-lowdiff-b22-cfg.json $P/tuned-latent-lowdiff-b14-cfg.json \\
        --baseline-plans $P/tuned-latent-flow-b34-cfg.json $P/tuned-latent-flow-b20-cfg.json \\
        --ref runs/fashion-test.npz --fast-fid fp32 --batch 32 --repeats 2 --switches "eager fp32" \\
        --cache $P/frontier-latent-cache.json --tag frontier-latent-4x4 --json $P/frontier-latent-4x4.json \\
        --plot docs/img/frontier-latent-4x4.png \\
        --heading "Ablation: the 4x4 -> 8x8 latent pair (a first stage one level below the paper's), FID vs throughput (the VAE decode timed)" \\
        --title "Fashion-MNIST latents (8x8x4 of bundled:fashion-vae), class-conditional"
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

from lowdiff.diffusion.consistency import named_plans
from lowdiff.diffusion.plan import FLOW_SCHEDULE, StagePlan
from lowdiff.diffusion.solvers import SOLVERS, flow_solvers
from lowdiff.errors import CheckpointError, ConfigError
from lowdiff.eval.bench import BenchOptions, Variant, device_name, measure
from lowdiff.eval.evaluate import evaluate_pipeline, get_extractor
from lowdiff.inference import InferenceOptions
from lowdiff.pipeline import Pipeline
from lowdiff.train.compute import model_compute

from _markdown import write_section

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "docs" / "results" / "frontier-cache.json"
SWITCHES = {"eager fp32": InferenceOptions(),
            "compile+bf16+channels_last": InferenceOptions(compile=True, precision="bf16", channels_last=True)}
NAMES = {"heun": "Heun", "euler": "Euler", "dpmpp2m": "DPM-Solver++(2M)", "dpmpp3m": "DPM-Solver++(3M)",
         "ipndm": "iPNDM"}


@dataclass
class Row:
    family: str                  # 'lowdiff' | 'baseline' | 'progressive' (the baseline's network, progressive plans)
    label: str
    plan: StagePlan
    switches: str
    fid: float = float("nan")
    fid_precision: str = ""      # the precision of the samples behind `fid`
    images_per_s: float = float("nan")
    effective_nfe: int = 0
    front: bool = False


def baseline_grid(plan: StagePlan, tuned: list[tuple[str, StagePlan]]) -> list[tuple[str, StagePlan]]:
    """EDM's Heun sampler (the published 35 NFE, and 17), DPM-Solver++(2M) at 13 and 7 NFE,
    DPM-Solver++(3M) at 11, and the tuned plans."""
    rows = [(f"Heun {n} steps", plan.replace(0, steps=n)) for n in (18, 9)]
    rows += [(f"{NAMES['dpmpp2m']} {n} steps", plan.replace(0, solver="dpmpp2m", steps=n)) for n in (13, 7)]
    rows += [(f"{NAMES['dpmpp3m']} 11 steps", plan.replace(0, solver="dpmpp3m", steps=11))]
    return rows + tuned


def flow_baseline_grid(plan: StagePlan, tuned: list[tuple[str, StagePlan]], cfg: tuple[float, float]
                       ) -> list[tuple[str, StagePlan]]:
    """A flow baseline's Euler sampler (LightningDiT's) at the preset's steps and about 0.7x and 0.5x
    of them, a two-evaluation flow-valid solver (Heun) at the preset's NFE, each guided with
    cfg = (scale, sigma_max); and the tuned plans, which keep their own guidance."""
    n = plan[0].steps
    rows = [(f"Euler {k} steps", plan.replace(0, solver="euler", steps=k))
            for k in sorted({n, round(0.7 * n), n // 2}, reverse=True) if k >= 1]
    higher = next((s for s in flow_solvers() if SOLVERS[s].evaluations_per_step == 2), None)
    if higher:
        twin = plan.with_solver(higher)
        rows.append((f"{NAMES[higher]} {twin[0].steps} steps", twin))
    return [(label, p.with_guidance(*cfg)) for label, p in rows] + tuned


def lowdiff_grid(plan: StagePlan, tuned: list[tuple[str, StagePlan]], lean: bool = False,
                 cfg: tuple[float, float] | None = None) -> list[tuple[str, StagePlan]]:
    """The paper plan (the preset's: Heun, or Euler for a flow model) guided with cfg = (scale,
    sigma_max) when given, its DPM-Solver++(3M) twin at equal NFE, the tuned plans (their own
    guidance), and the best-budget tuned plan with one fewer and two more final-stage steps;
    `lean`: the paper plan and the tuned plans only."""
    plan = plan.with_guidance(*cfg) if cfg else plan
    rows = [(f"paper plan, {NAMES[plan[-1].solver]}", plan)]
    rows += [] if lean else [("paper plan, DPM-Solver++(3M)", plan.with_solver("dpmpp3m"))]
    rows += tuned
    if tuned and not lean:
        label, best = tuned[0]
        for d in (-1, 2):
            steps = best[-1].steps + d
            if steps >= 1:
                rows.append((f"{label}, final stage {steps} steps", best.replace(len(best) - 1, steps=steps)))
    return rows


def progressive_grid(tuned: list[tuple[str, StagePlan]]) -> list[tuple[str, StagePlan]]:
    """The tuned progressive plans, and the best budget's plan with the other hand-over at the same switch."""
    rows = list(tuned)
    if tuned:
        label, best = tuned[0]
        other = {"spectral": "plain", "plain": "spectral"}
        for i, s in enumerate(best):
            if s.handover != "none":
                best = best.replace(i, handover=other[s.handover])
        rows.append((f"{label}, {best[-1].handover} hand-over", best))
    return rows


def consistency_grid(preset) -> list[tuple[str, StagePlan]]:
    """The consistency plans a consistency-tuned model's preset names (one and two steps per stage, ...)."""
    return [(f"consistency `{name}`", plan)
            for name, (plan, _) in named_plans(preset.stages, preset.consistency.boundaries).items()]


PIXEL_FAMILIES = {"baseline": "EDM", "progressive": "EDM progressive", "lowdiff": "LowDiff",
                  "baseline-ct": "EDM consistency-tuned", "lowdiff-ct": "LowDiff consistency-tuned"}
FLOW_FAMILIES = {"baseline": "LightningDiT-style flow", "lowdiff": "LowDiff"}
PIXEL_HEADING = ("The headline: LowDiff against its tuned baseline, the baseline sampled progressively and, distilled, "
                 "the consistency-tuned pair, FID vs throughput")
FLOW_HEADING = ("Latents: LowDiff against its tuned LightningDiT-style flow baseline, FID vs throughput "
                "(the VAE decode timed)")
COMPETITORS = ("baseline", "progressive")       # the training-free families LowDiff is compared with
DISTILLED = {"ours": ("lowdiff-ct",), "competitors": ("baseline-ct",)}   # compared among themselves
DISTILLED_FAMILIES = (*DISTILLED["ours"], *DISTILLED["competitors"])


def family_names(flow: bool) -> dict[str, str]:
    """The families of a pair and their display names, in the page's order: the pixel pair's EDM
    baseline with its progressive and consistency-tuned kin; a flow pair's LightningDiT-style
    baseline and LowDiff only (progressive plans sample EDM-schedule models, and the consistency
    sampler is not valid on the flow ODE)."""
    return FLOW_FAMILIES if flow else PIXEL_FAMILIES


def guidance_text(plan: StagePlan) -> str:
    """The guidance scale per stage, and the interval's top of the guided stages: '2.5/2.5 (sigma <= 0.89)'."""
    tops = sorted({s.cfg_sigma_max for s in plan if s.cfg_scale != 1})
    return "/".join(f"{s.cfg_scale:g}" for s in plan) + (f" (sigma <= {'/'.join(f'{v:g}' for v in tops)})"
                                                          if tops else "")


def load_tuned(paths: list[str]) -> list[tuple[str, StagePlan]]:
    out = []
    for path in paths:
        tuned = json.loads(Path(path).read_text()).get("tuned", {})
        budget = tuned.get("budget_nfe")
        # plans of the first tuner (coordinate descent from the model's plan only) carry no screening
        # sample count; they stay comparable rows of the front under their own name
        who = "tuned" if "screen_num" in tuned else "tuned (first tuner)"
        label = f"{who}, budget {budget:g} eff. NFE" if budget else f"{who} ({Path(path).name})"
        starts = [Path(start).stem for start in tuned.get("start_plans", [])]      # `lowdiff tune --start`
        if starts:
            label += f", search also started from {' and '.join(starts)}"
        out.append((label, StagePlan.load(path)))
    labels = [label for label, _ in out]
    return [(f"{label} ({Path(path).stem})" if labels.count(label) > 1 else label, plan)   # two tunes, one budget
            for (label, plan), path in zip(out, paths)]


def fid_key(spec: str, plan: StagePlan, precision: str, seed: int, args) -> str:
    """The FID cache's key: model, plan, sampling precision, sample count, first seed, reference
    (named by what it holds: data, image count, feature space, extractor hash, not by its path).
    A stage that starts from noise leaves out `start`, one without a hand-over `handover`: keys
    written before warm starts and progressive plans existed name the same samples."""
    defaults = {"start": "noise", "handover": "none"}
    stages = [{k: v for k, v in s.items() if defaults.get(k, ...) != v} for s in plan.to_list()]
    return json.dumps([spec, stages, precision, args.num, seed, args.ref_name], sort_keys=True)


def reference_name(ref: str) -> str:
    """What a statistics file holds, as recorded in it by `lowdiff eval ref`."""
    with np.load(ref) as f:
        return "|".join(str(f[k].item()) if k in f.files else "?"
                        for k in ("data", "num", "feature_space", "extractor_sha256"))


def cached(cache_file: str | Path, key: str, measure):
    """The value stored under `key` in the JSON file `cache_file`, else `measure()`, stored at once
    (re-read first: a parallel run's entries are kept), so an interrupted run resumes."""
    cache_file = Path(cache_file)
    cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    if key not in cache:
        value = measure()
        cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
        cache[key] = value
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps(cache, indent=1))
    return cache[key]


def cached_fid(pipe: Pipeline, spec: str, plan: StagePlan, precision: str, seed: int, args, extractor) -> float:
    """FID of `pipe` (its weights, sampled eagerly at `precision`) with `plan` on seeds [seed, seed + num)."""
    def measure() -> float:
        t = time.perf_counter()
        eager = Pipeline(pipe.denoiser, pipe.preset, options=InferenceOptions(precision=precision), vae=pipe.vae)
        ev = evaluate_pipeline(eager, args.ref, extractor, "classifier", num=args.num, seed=seed, stages=plan,
                               batch=args.batch, progress=False)
        print(f"  FID {ev.fid:.3f} ({precision}, seeds {seed}-{seed + args.num - 1}, "
              f"{time.perf_counter() - t:.0f} s): {spec} {plan.nfe_per_stage}", file=sys.stderr, flush=True)
        return ev.fid

    return cached(args.cache, fid_key(spec, plan, precision, seed, args), measure)


def known_or_measured_fid(spec: str, plan: StagePlan, args, extractor, load, measure: bool,
                          other_caches=()) -> float | None:
    """The fp32 FID of model `spec` with `plan`: from args.cache or, failing that, the read-only
    `other_caches`; else measured (and cached) on the pipeline `load()` gives when `measure`, else None."""
    key = fid_key(spec, plan, "fp32", args.seed, args)
    for path in (Path(args.cache), *map(Path, other_caches)):
        if path.is_file() and key in (known := json.loads(path.read_text())):
            return known[key]
    return cached_fid(load(), spec, plan, "fp32", args.seed, args, extractor) if measure else None


def measured_bf16_gaps(rows: list[Row], specs: dict, args) -> list[tuple[str, float]]:
    """(row label, bf16 FID - fp32 FID) for every plan whose two eager FIDs are both cached."""
    cache = json.loads(Path(args.cache).read_text()) if Path(args.cache).exists() else {}
    out = []
    for r in rows:
        if r.switches != "eager fp32":
            continue
        keys = [fid_key(specs[r.family], r.plan, prec, args.seed, args) for prec in ("fp32", "bf16")]
        if all(k in cache for k in keys):
            out.append((f"{family_names(args.flow)[r.family]}, {r.label}", cache[keys[1]] - cache[keys[0]]))
    return out


def seed_noise(rows: list[Row], pipes: dict, specs: dict, args, extractor) -> tuple[Row, list[float]]:
    """The baseline's best row and the FIDs of its plan on `args.noise_sets` disjoint seed ranges
    [seed + k num, seed + (k + 1) num): the first is the row's own FID."""
    best = min((r for r in rows if r.family == "baseline"), key=lambda r: r.fid)
    fids = [cached_fid(pipes["baseline"], specs["baseline"], best.plan, best.fid_precision, args.seed + k * args.num,
                       args, extractor) for k in range(args.noise_sets)]
    return best, fids


def pareto(rows: list[Row]) -> None:
    for r in rows:
        r.front = not any(o.fid <= r.fid and o.images_per_s >= r.images_per_s and
                          (o.fid < r.fid or o.images_per_s > r.images_per_s) for o in rows)


def matched(rows: list[Row], noise: float, switches: str | None, competitors=("baseline",),
            ours=("lowdiff",)) -> dict:
    """Our families' throughput at the competitors' best FID (within `noise`), as a ratio over the fastest
    competitor row within the same bound; competitors: the baseline's rows, or those and the progressive
    ones; or, for the distilled pair, the consistency-tuned baseline against the consistency-tuned LowDiff."""
    pick = [r for r in rows if switches is None or r.switches == switches]
    base = [r for r in pick if r.family in competitors]
    low = [r for r in pick if r.family in ours]
    best = min(base, key=lambda r: r.fid)
    bound = best.fid + noise
    b = max((r for r in base if r.fid <= bound), key=lambda r: r.images_per_s)
    within = [r for r in low if r.fid <= bound]
    out = {"switches": switches or "either", "competitors": list(competitors), "ours": list(ours),
           "baseline_best_fid": best.fid,
           "bound": bound, "baseline": _summary(b, family=True)}
    if within:
        lo = max(within, key=lambda r: r.images_per_s)
        out["lowdiff"] = _summary(lo)
        out["ratio"] = lo.images_per_s / b.images_per_s
    elif low:
        out["at_our_best"] = matched_at_our_best(base, low, noise)
    return out


def matched_at_our_best(base: list[Row], low: list[Row], noise: float) -> dict:
    """Where our rows never reach the competitors' best FID: the same ratio at our own best FID instead
    (bound = it + noise), over the fastest competitor row within that bound: a ratio at a lower quality
    than the competitors reach, which the page quotes as such, never as the headline."""
    best = min(low, key=lambda r: r.fid)
    bound = best.fid + noise
    lo = max((r for r in low if r.fid <= bound), key=lambda r: r.images_per_s)
    b = max((r for r in base if r.fid <= bound), key=lambda r: r.images_per_s)   # the competitors' best is within
    return {"our_best_fid": best.fid, "bound": bound, "lowdiff": _summary(lo), "baseline": _summary(b, family=True),
            "ratio": lo.images_per_s / b.images_per_s}


def _summary(r: Row, family: bool = False) -> dict:
    """A headline's record of a row (a competitor's names its family too)."""
    return {"label": r.label, **({"family": r.family} if family else {}), "switches": r.switches, "fid": r.fid,
            "images_per_s": r.images_per_s}


def plot(rows: list[Row], path: Path, title: str, batch: int, families: dict[str, str] = PIXEL_FAMILIES) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, NullLocator, ScalarFormatter
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=120)
    colours = {"baseline": "C1", "lowdiff": "C0", "progressive": "C2", "baseline-ct": "C3", "lowdiff-ct": "C4"}
    names = families | {"baseline": f"{families['baseline']} (single resolution)"}
    for family in families:
        for switches, marker in zip(SWITCHES, ("o", "s")):
            pts = [r for r in rows if r.family == family and r.switches == switches]
            if not pts:
                continue    # a switch set this run did not time gets no legend entry
            ax.scatter([r.images_per_s for r in pts], [r.fid for r in pts], c=colours[family], marker=marker,
                       s=22, alpha=0.55, label=f"{names[family]}, {switches}")
        front = sorted((r for r in rows if r.family == family and r.front), key=lambda r: r.images_per_s)
        ax.plot([r.images_per_s for r in front], [r.fid for r in front], "-", c=colours[family], lw=1.6,
                label=f"{names[family]} Pareto front")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))      # 0.3, 0.5, 1, 2, 3, 5, 10, ...
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"throughput (images / s, measured, batch {batch})")
    ax.set_ylabel("FID")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))     # beside the axes, hiding no point
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_title(num: int, what: str = "Fashion-MNIST 32x32 class-conditional") -> str:
    return f"{what}: FID ({num} samples) vs throughput"


ROW_FIELDS = ("family", "label", "switches", "fid", "fid_precision", "images_per_s", "effective_nfe", "front")


def row_record(r: Row) -> dict:
    """A row as the JSON lists it; `replot` reads the same fields back."""
    return {k: getattr(r, k) for k in ROW_FIELDS} | {"nfe": r.plan.nfe_per_stage, "plan": r.plan.to_list()}


def replot(json_path: Path, plot_path: Path) -> None:
    """Redraw the plot from a finished run's JSON (no sampling, no timing)."""
    data = json.loads(json_path.read_text())
    rows = [Row(plan=None, **{k: r[k] for k in ROW_FIELDS}) for r in data["rows"]]
    plot(rows, plot_path, plot_title(data["num"], data.get("title", "Fashion-MNIST 32x32 class-conditional")),
         data["batch"], family_names(data.get("flow", False)))


def training_note(lowdiff: str, baseline: str, names: dict) -> str:
    """What each model's training spent (images and FLOPs, from the training record it keeps) and
    whether that is equal images or equal compute, as a phrase of the page; the page says so when a
    model has no record, rather than claiming a budget."""
    try:
        low, base = model_compute(lowdiff), model_compute(baseline)
        spent = {k: (float(low[k]), float(base[k])) for k in ("kimg", "train_tflop")}
    except (ConfigError, CheckpointError, KeyError, TypeError, ValueError):
        return "the training compute of the two is not recorded"
    (low_kimg, base_kimg), (low_tflop, base_tflop) = spent["kimg"], spent["train_tflop"]
    equal_compute = abs(low_tflop - base_tflop) <= 0.01 * base_tflop
    verdict = ("equal training compute" if equal_compute else
               f"{names['lowdiff']} at {low_tflop / base_tflop:.2f}x the baseline's training compute")
    if abs(low_kimg - base_kimg) <= 0.005 * base_kimg:
        verdict = "equal images" + ("" if equal_compute else f", {verdict}")
    return (f"{verdict}: {names['lowdiff']} trained on {round(low_kimg, 1):g} kimg ({low_tflop:.1f} TFLOP), the "
            f"baseline on {round(base_kimg, 1):g} kimg ({base_tflop:.1f} TFLOP)")


def markdown(rows, report, noise, noise_row, noise_fids, headlines, bf16_gaps, args, command) -> str:
    progressive_note = ("; the EDM progressive rows sample the baseline's network at lower resolutions first, plans "
                        "tuned by `lowdiff tune --progressive only`" if args.progressive_plans else "")
    if args.lowdiff_ct or args.baseline_ct:
        progressive_note += ("; the consistency-tuned rows sample " + " and ".join(
            f"`{m}`" for m in (args.lowdiff_ct, args.baseline_ct) if m) + " (each tuned from the model above, equal "
            "tuning compute: docs/results.md, 'Consistency tuning') with the consistency plans they ship")
    names = family_names(args.flow)
    flow_note = (f"Guidance: the hand-made rows guided at scale {args.cfg:g} at noise levels <= {args.cfg_sigma_max:g} "
                 "(LightningDiT's interval), the tuned rows with their own (column CFG); a guided evaluation is two "
                 "network passes (one doubled batch). Every row's time includes the VAE decode of its latents "
                 "(the FIDs are of the decoded images). " if args.flow else "")
    lines = [f"## {args.heading}", "",
             f"Measured {date.today().isoformat()} on **{report['device']}**; batch {args.batch}, mean of "
             f"{args.repeats} timed runs after {args.warmup} warm-up, all {len(rows)} rows timed alternately in one "
             f"process. Models: `{args.lowdiff}` and `{args.baseline}` ({args.title}; "
             f"{training_note(args.lowdiff, args.baseline, names)}{progressive_note}). FID: bundled classifier features, "
             f"{args.num} samples per point, seeds "
             f"{args.seed}-{args.seed + args.num - 1} (held out from the tuner's seeds 0-499), against "
             f"`{Path(args.ref).name}` (the 10,000 test images). {flow_note}"
             + (f"Every row timed under {', '.join(args.switches)}."
                if all(SWITCHES[s].precision == "fp32" for s in args.switches)
                else "The fast rows take the FID of their plan's eager fp32 samples (bf16 sampling on this CPU is "
                "several times slower than fp32, so its FIDs were not all measured; the differences measured: "
                + ("; ".join(f"{label} {gap:+.3f}" for label, gap in bf16_gaps) or "none") + ")."
                if args.fast_fid == "fp32" else
                "The fast rows take the FID of their precision's eager samples (compilation and channels_last "
                "change samples only by rounding)."), "",
             f"Command: `{command}`, run from the repository root after the reference was made there by "
             f"`lowdiff eval ref --data {args.ref_name.split('|')[0]} --out {args.ref}`.", "",
             f"FID noise: {noise:.3f} = the standard deviation of the FIDs of the baseline's best plan "
             f"(*{noise_row}*) on {args.noise_sets} disjoint seed ranges of {args.num} samples, seeds {args.seed}-"
             f"{args.seed + args.noise_sets * args.num - 1} ({noise_fids}): the seed-to-seed noise of a FID at this "
             "sample count.", ""]
    for k, earlier in enumerate(args.earlier_headlines):
        lines.append(f"- timing run {k + 1} (an earlier process): " + "; ".join(
            _earlier_text(h, names) for h in earlier))
    for h in headlines:
        who = ("the best competitor's" if len(h.get("competitors", ())) > 1 else
               f"the {names[h.get('competitors', ['baseline'])[0]]} baseline's")
        ours = names[h.get("ours", ["lowdiff"])[0]]
        if "ratio" in h:
            b = h["baseline"]
            lines.append(f"- **{_against(h)}**: {who} best FID {h['baseline_best_fid']:.3f}; within "
                         f"{noise:.3f} of it the fastest {names[b.get('family', 'baseline')]} row is "
                         f"*{b['label']}* ({b['switches']}, {b['images_per_s']:.1f} img/s, FID {b['fid']:.3f}) and the "
                         f"fastest {ours} row *{h['lowdiff']['label']}* ({h['lowdiff']['switches']}, "
                         f"{h['lowdiff']['images_per_s']:.1f} img/s, FID {h['lowdiff']['fid']:.3f}): "
                         f"**{h['ratio']:.2f}x**.")
        else:
            lines.append(f"- **{_against(h)}**: no {ours} row reaches {who} best FID "
                         f"{h['baseline_best_fid']:.3f} + noise." + _at_our_best_text(h.get("at_our_best"), ours,
                                                                                      names))
    cfg_column = " CFG |" if args.flow else ""
    lines += ["", f"![FID vs throughput]({os.path.relpath(args.plot, Path(args.out).parent)})", "",
              f"| family | plan | solver | NFE per stage |{cfg_column} eff. NFE | switches | img/s | FID | front |",
              "|---|---|---|---|" + ("---|" if args.flow else "") + "---|---|---|---|---|"]
    order = list(names)
    for r in sorted(rows, key=lambda r: (order.index(r.family), r.switches, -r.images_per_s)):
        nfe = "/".join(str(v) for v in r.plan.nfe_per_stage.values())
        solver = "/".join(s.solver for s in r.plan)
        if r.plan.progressive:
            nfe += " (" + "/".join(f"{s.resolution}" for s in r.plan) + ", switch " + ", ".join(
                f"{s.sigma_max:g} {s.handover}" for s in r.plan if s.handover != "none") + ")"
        cfg = f" {guidance_text(r.plan)} |" if args.flow else ""
        lines.append(f"| {names[r.family]} | {r.label} | {solver} | {nfe} |{cfg} "
                     f"{r.effective_nfe} | {r.switches} | {r.images_per_s:.2f} | {r.fid:.3f} | "
                     f"{'**P**' if r.front else ''} |")
    lines += ["", "Effective NFE is measured (paper App. B): each stage's NFE weighted by its per-evaluation latency "
              "relative to the target resolution, under that row's switches. P = on its family's Pareto front over "
              "the switch sets timed." + (" EDM progressive: the EDM network sampled at lower resolutions first (NFE "
                                          "per stage with the stage sides, and each switch sigma with its hand-over)."
                                          if "progressive" in names else "")]
    return "\n".join(lines) + "\n"


def _at_our_best_text(a: dict | None, ours: str, names: dict) -> str:
    """The fallback headline (`matched_at_our_best`) as a sentence, empty when there is none."""
    if not a:
        return ""
    lo = a["lowdiff"]
    text = (f" At {ours}'s own best FID {a['our_best_fid']:.3f} (bound {a['bound']:.3f}) its fastest row is "
            f"*{lo['label']}* ({lo['images_per_s']:.1f} img/s, FID {lo['fid']:.3f})")
    b = a["baseline"]
    return (text + f" and the fastest {names[b['family']]} row within it *{b['label']}* ({b['images_per_s']:.1f} "
            f"img/s, FID {b['fid']:.3f}): {a['ratio']:.2f}x at that lower quality.")


def _earlier_text(h: dict, names: dict) -> str:
    """An earlier timing process's headline in a few words: its ratio, or no match and the ratio at
    LowDiff's own best FID when there is one."""
    if "ratio" in h:
        return f"{_against(h)} {h['ratio']:.2f}x"
    a = h.get("at_our_best")
    ours = names[h.get("ours", ["lowdiff"])[0]]
    return f"{_against(h)} no match" + (f" ({a['ratio']:.2f}x at {ours}'s own best FID)" if a else "")


def _against(h: dict) -> str:
    """A headline's name: its switch set, and against whom when it is not the baseline alone."""
    if h.get("ours", ["lowdiff"]) != ["lowdiff"]:
        return h["switches"] + ", distilled: consistency-tuned LowDiff against consistency-tuned EDM"
    return h["switches"] + (", against the best competitor (tuned single resolution or tuned progressive)"
                            if len(h.get("competitors", ())) > 1 else "")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lowdiff", default="bundled:fashion-lowdiff-cond")
    p.add_argument("--baseline", default="bundled:fashion-edm-cond")
    p.add_argument("--lowdiff-plans", nargs="*", default=[], help="tuned plans of the LowDiff model, best budget first")
    p.add_argument("--baseline-plans", nargs="*", default=[], help="tuned plans of the baseline")
    p.add_argument("--progressive-plans", nargs="*", default=[],
                   help="tuned progressive plans of the baseline (`lowdiff tune --progressive only`), "
                   "best budget first")
    p.add_argument("--lean", action="store_true", help="LowDiff rows: the paper plan and the tuned plans only "
                   "(no DPM-Solver++(3M) twin, no final-stage variants of the best budget)")
    p.add_argument("--cfg", type=float, default=2.5, help="flow pairs: the guidance scale of the hand-made rows "
                   "(the tuned plans keep their own)")
    p.add_argument("--cfg-sigma-max", dest="cfg_sigma_max", type=float, default=0.89,
                   help="flow pairs: guide at noise levels <= this (default 0.89, LightningDiT's interval)")
    p.add_argument("--lowdiff-ct", help="a consistency-tuned LowDiff model: its consistency plans become rows")
    p.add_argument("--baseline-ct", help="a consistency-tuned baseline: its consistency plans become rows")
    p.add_argument("--ref", help="reference statistics (bundled classifier) of the test set")
    p.add_argument("--num", type=int, default=2000)
    p.add_argument("--seed", type=int, default=100_000)
    p.add_argument("--noise-sets", dest="noise_sets", type=int, default=5,
                   help="disjoint seed ranges of --num samples of the baseline's best plan whose FIDs give the "
                   "noise (default 5)")
    p.add_argument("--fast-fid", dest="fast_fid", choices=["own", "fp32"], default="own",
                   help="FID of the compile+bf16 rows: of bf16 eager samples (own) or the plan's fp32 FID")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--only-fid", action="store_true",
                   help="fill the FID cache (the noise FIDs too, unless --family lowdiff) and stop (no timing)")
    p.add_argument("--family", choices=list(PIXEL_FAMILIES), help="with --only-fid: one family only")
    p.add_argument("--cache", default=str(CACHE), help="FID cache (JSON)")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    p.add_argument("--json", default=str(ROOT / "docs" / "results" / "frontier.json"))
    p.add_argument("--plot", default=str(ROOT / "docs" / "img" / "frontier.png"))
    p.add_argument("--replot", action="store_true", help="only redraw --plot from a finished run's --json")
    p.add_argument("--retime", action="store_true", help="time again in this (new) process with the rows of --json "
                   "and their cached FIDs, and report this run's ratios beside the earlier ones")
    p.add_argument("--title", default="Fashion-MNIST 32x32 class-conditional", help="what the models are")
    p.add_argument("--heading", help="the section's heading (default: the pixel or the flow pair's)")
    p.add_argument("--tag", default="frontier", help="section tag in --out")
    p.add_argument("--switches", nargs="+", choices=list(SWITCHES), default=list(SWITCHES),
                   help="the switch sets to time (default both)")
    args = p.parse_args()
    if not args.replot and args.noise_sets < 2:
        p.error("--noise-sets must be at least 2 (the noise is a standard deviation)")
    if not args.replot and args.ref is None:
        p.error("--ref (the FID reference statistics, `lowdiff eval ref`) is required unless --replot")
    return args


def models(args) -> tuple[dict, dict]:
    """(family -> Pipeline, family -> model spec) of every family this run samples."""
    specs = {"lowdiff": args.lowdiff, "baseline": args.baseline, "progressive": args.baseline,
             "lowdiff-ct": args.lowdiff_ct, "baseline-ct": args.baseline_ct}
    specs = {family: spec for family, spec in specs.items() if spec}
    loaded = {spec: Pipeline.from_pretrained(spec) for spec in set(specs.values())}
    return {family: loaded[spec] for family, spec in specs.items()}, specs   # progressive: the baseline's network


def flow_pair(pipes: dict, args) -> bool:
    """Whether LowDiff and the baseline are rectified-flow models (a flow pair: flow grids, guidance,
    flow names); a flow pair takes no progressive plans or consistency-tuned models."""
    kinds = {pipes[family].preset.precond.schedule == FLOW_SCHEDULE for family in ("lowdiff", "baseline")}
    if len(kinds) > 1:
        raise SystemExit("--lowdiff and --baseline: one is a flow model and the other not; compare a pair of one kind")
    if True in kinds and (args.progressive_plans or args.lowdiff_ct or args.baseline_ct):
        raise SystemExit("a flow pair has no progressive or consistency-tuned rows: progressive plans sample "
                         "EDM-schedule models, and the consistency sampler is not valid on the flow ODE")
    return True in kinds


def build_rows(pipes: dict, args) -> list[Row]:
    lowdiff, baseline = pipes["lowdiff"].preset.stages, pipes["baseline"].preset.stages
    if args.flow:
        cfg = (args.cfg, args.cfg_sigma_max)
        grids = {"lowdiff": lowdiff_grid(lowdiff, load_tuned(args.lowdiff_plans), args.lean, cfg),
                 "baseline": flow_baseline_grid(baseline, load_tuned(args.baseline_plans), cfg)}
    else:
        grids = {"lowdiff": lowdiff_grid(lowdiff, load_tuned(args.lowdiff_plans), args.lean),
                 "baseline": baseline_grid(baseline, load_tuned(args.baseline_plans)),
                 "progressive": progressive_grid(load_tuned(args.progressive_plans))}
        grids |= {family: consistency_grid(pipes[family].preset) for family in DISTILLED_FAMILIES if family in pipes}
    return [Row(f, label, plan, sw) for f, grid in grids.items() for label, plan in grid for sw in args.switches]


def time_rows(rows: list[Row], pipes: dict, args) -> dict:
    """Time every row alternately in this process; fills images_per_s and effective_nfe. A latent
    model's rows are timed with the VAE decode of their samples (pixel models decode nothing)."""
    from tqdm import tqdm
    opts = BenchOptions(batch=args.batch, repeats=args.repeats, warmup=args.warmup, device="cpu")
    variants = [Variant(f"{r.family}: {r.label} [{r.switches}]", pipes[r.family].preset, SWITCHES[r.switches],
                        r.plan, pipes[r.family].denoiser, decode=pipes[r.family].decode) for r in rows]
    with tqdm(total=len(variants) * (args.warmup + args.repeats), unit="run", desc="timing") as bar:
        timed = measure(variants, opts, bar)
    for r, t in zip(rows, timed):
        r.images_per_s, r.effective_nfe = t["images_per_s"], t["effective_nfe"]
    return {"device": device_name("cpu"), "rows": timed}


def all_headlines(rows: list[Row], noise: float, args) -> list[dict]:
    """LowDiff against the baseline, against the best training-free competitor, and the distilled pair."""
    families = {r.family for r in rows}
    against = [{"competitors": ("baseline",)}] + ([{"competitors": COMPETITORS}] if "progressive" in families else [])
    against += [DISTILLED] if families >= set(DISTILLED_FAMILIES) else []
    return [matched(rows, noise, s, **a) for a in against for s in (*args.switches, None)]


def main() -> None:
    args = parse_args()
    if args.replot:
        return replot(Path(args.json), Path(args.plot))
    command = "python benchmarks/frontier.py " + shlex.join(sys.argv[1:])
    args.ref_name = reference_name(args.ref)    # read once: every FID cache key names the reference
    pipes, specs = models(args)
    args.flow = flow_pair(pipes, args)
    args.heading = args.heading or (FLOW_HEADING if args.flow else PIXEL_HEADING)
    rows = build_rows(pipes, args)
    extractor = get_extractor("classifier", channels=pipes["lowdiff"].image_channels, ref=args.ref)
    args.earlier_headlines = []
    if args.retime:
        earlier = json.loads(Path(args.json).read_text())
        args.earlier_headlines = earlier.get("earlier_headlines", []) + [earlier["headlines"]]
    for r in rows:
        if args.family and r.family != args.family:
            continue
        r.fid_precision = "fp32" if args.fast_fid == "fp32" else SWITCHES[r.switches].precision
        r.fid = cached_fid(pipes[r.family], specs[r.family], r.plan, r.fid_precision, args.seed, args, extractor)
    if args.only_fid:
        if args.family != "lowdiff":
            seed_noise(rows, pipes, specs, args, extractor)    # the noise FIDs are cached too
        return
    noise_row, noise_fids = seed_noise(rows, pipes, specs, args, extractor)
    noise = statistics.stdev(noise_fids)
    bf16_gaps = measured_bf16_gaps(rows, specs, args)
    report = time_rows(rows, pipes, args)
    for family in family_names(args.flow):
        pareto([r for r in rows if r.family == family])
    headlines = all_headlines(rows, noise, args)
    plot(rows, Path(args.plot), plot_title(args.num, args.title), args.batch, family_names(args.flow))
    text = markdown(rows, report, noise, noise_row.label, ", ".join(f"{v:.3f}" for v in noise_fids), headlines,
                    bf16_gaps, args, command)
    write_section(Path(args.out), args.tag, text)
    Path(args.json).write_text(json.dumps({
        "command": command, "models": specs, "batch": args.batch, "num": args.num, "noise": noise,
        "noise_fids": noise_fids,
        "noise_plan": noise_row.label,
        "title": args.title, "flow": args.flow, "headlines": headlines, "earlier_headlines": args.earlier_headlines,
        "bf16_minus_fp32_fid": bf16_gaps, "rows": [row_record(r) for r in rows], "timing": report["rows"]},
        indent=1, default=str))
    print(text)


if __name__ == "__main__":
    main()
