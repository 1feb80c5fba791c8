"""Write the named plans that ship with the bundled models (lowdiff/assets/NAME/plans.json) from
the measured frontier rows (docs/results/frontier*.json): each plan's stages and figures are the
row's, never retyped. Re-run after a frontier is re-measured:

    python scripts/ship_plans.py
"""
from __future__ import annotations

import json
from pathlib import Path

from lowdiff import bundled, storage
from lowdiff.diffusion.consistency import named_plans
from lowdiff.diffusion.plan import StagePlan
from lowdiff.plans import Figures, ModelPlans, NamedPlan

ROOT = Path(__file__).resolve().parents[1]
PAPER = {"lowdiff": "paper plan, Heun", "baseline": "Heun 18 steps"}
# A flow pair's frontier rows are guided (`--cfg`), so none is config.json's unguided plan: the
# flow models ship their paper plan guided, under its own name, beside config.json's.
FLOW_PAPER = {"lowdiff": "paper plan, Euler", "baseline": "Euler 20 steps"}
CONSISTENCY = None    # a consistency-tuned model ships every consistency plan its preset names (their frontier rows)
# model -> (frontier file, family, {plan name: (frontier row label, description[, family if another])})
SHIPPED = {
    "fashion-lowdiff-cond": ("frontier.json", "lowdiff", {
        "best": ("tuned, budget 9 eff. NFE", "lowest FID: tuned at budget 9"),
        "balanced": ("tuned, budget 6 eff. NFE", "tuned at budget 6"),
        "fast": ("tuned, budget 4 eff. NFE", "tuned at budget 4 (warm-started 16x16 and 32x32)")}),
    "fashion-edm-cond": ("frontier.json", "baseline", {
        "best": ("tuned, budget 13 eff. NFE", "lowest FID: tuned at budget 13"),
        "fast": ("tuned, budget 6 eff. NFE", "tuned at budget 6"),
        "fastest": ("tuned, budget 5 eff. NFE", "tuned at budget 5"),
        "progressive": ("tuned, budget 6 eff. NFE", "training-free progressive sampling (8x8 and 16x16 first, "
                        "README 'Progressive sampling'): tuned at budget 6", "progressive")}),
    "cifar-lowdiff-cond": ("frontier-cifar.json", "lowdiff", {
        "best": ("tuned, budget 9 eff. NFE", "lowest FID: tuned at budget 9"),
        "fast": ("tuned, budget 6 eff. NFE", "tuned at budget 6"),
        "fastest": ("tuned, budget 5 eff. NFE", "tuned at budget 5")}),
    "cifar-edm-cond": ("frontier-cifar.json", "baseline", {
        "best": ("tuned, budget 7 eff. NFE", "lowest FID: tuned at budget 7"),
        "fast": ("tuned, budget 6 eff. NFE", "tuned at budget 6"),
        "fastest": ("tuned, budget 5 eff. NFE, search also started from tuned2-cifar-edm-b6 and tuned2-cifar-edm-b7",
                    "tuned at budget 5"),
        "progressive": ("tuned, budget 6 eff. NFE, search also started from tuned-progressive-edm-b6",
                        "training-free progressive sampling (16x16 first, README 'Progressive sampling'): tuned at "
                        "budget 6", "progressive")}),
    "fashion-lowdiff-ct": ("frontier.json", "lowdiff-ct", CONSISTENCY),
    "fashion-edm-ct": ("frontier.json", "baseline-ct", CONSISTENCY),
    "fashion-latent16-lowdiff": ("frontier-latent16.json", "lowdiff", {
        "best": ("tuned, budget 22 eff. NFE, search also started from start-latent16-lowdiff-cfg2.5",
                 "lowest FID: tuned at budget 22 (the 8x8 stage guided at scale 2)"),
        "fast": ("tuned, budget 14 eff. NFE, search also started from start-latent16-lowdiff-cfg2.5",
                 "tuned at budget 14 (the 8x8 stage guided at scale 2)")}),
    "fashion-latent16-flow": ("frontier-latent16.json", "baseline", {
        "best": ("tuned, budget 34 eff. NFE", "lowest FID: tuned at budget 34 (guidance 1.75)"),
        "fast": ("tuned, budget 20 eff. NFE, search also started from start-latent16-flow-cfg2.5",
                 "tuned at budget 20 (guidance 2.5)")}),
}
SECTIONS = {"frontier.json": "frontier", "frontier-cifar.json": "frontier-cifar", "frontier-latent16.json": "frontier-latent"}


def row_plan(row: dict, name: str, description: str, frontier: dict, source: str) -> NamedPlan:
    figures = Figures(fid=row["fid"], samples=frontier["num"], images_per_s=row["images_per_s"],
                      device=f"one CPU thread, {row['switches']}", batch=frontier["batch"],
                      seeds="100000-101999", feature_space="classifier (bundled)",
                      source=f"docs/benchmarks.md, section {source} ({frontier['title']})")
    return NamedPlan(name, StagePlan.from_list(row["plan"], f"{source}: {row['label']}"), description, figures)


def ship(model: str) -> Path:
    file, family, named = SHIPPED[model]
    frontier = json.loads((ROOT / "docs" / "results" / file).read_text())
    rows = {(r["family"], r["label"]): r for r in frontier["rows"]}
    section = SECTIONS[file]
    directory = bundled.ASSETS / model
    plans = ModelPlans.read(directory)
    plans.plans = {k: v for k, v in plans.plans.items() if k == "config"}
    if frontier.get("flow"):
        row = rows[family, FLOW_PAPER[family]]
        stage = StagePlan.from_list(row["plan"])[0]
        plans.add(row_plan(row, "paper-cfg", "the preset's plan from the paper, guided at scale "
                           f"{stage.cfg_scale:g} at sigma <= {stage.cfg_sigma_max:g}", frontier, section))
    elif family in PAPER:
        paper = row_plan(rows[family, PAPER[family]], "paper", "the preset's plan from the paper (its config.json)",
                         frontier, section)
        if paper.stages != plans.plans["config"].stages:
            raise SystemExit(f"{model}: the frontier's paper row is not config.json's plan")
        plans.add(paper)
    if named is CONSISTENCY:
        preset = storage.load_config(directory)
        for name, (stages, description) in named_plans(preset.stages, preset.consistency.boundaries).items():
            row = next(r for r in frontier["rows"] if r["family"] == family and StagePlan.from_list(r["plan"]) == stages)
            plans.add(row_plan(row, name, description, frontier, section))
    for name, (label, description, *other) in (named or {}).items():
        plans.add(row_plan(rows[(other or [family])[0], label], name, description, frontier, section))
    plans.fid_noise = frontier["noise"]
    plans.extra = {"fid_noise_source": f"seed-to-seed spread of the tuned baseline's best FID on "
                                       f"{len(frontier['noise_fids'])} disjoint sets of "
                                       f"{frontier['num']} seeds (docs/benchmarks.md, section {section})"}
    return plans.write(directory)


if __name__ == "__main__":
    for model in SHIPPED:
        path = ship(model)
        default = ModelPlans.read(path.parent).default()
        print(f"{path.relative_to(ROOT)}: default {default.summary()}")
