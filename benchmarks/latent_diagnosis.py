"""Which stage of latent LowDiff costs the FID (issue 35, item 1), on a bundled latent pair: by default
`bundled:fashion-latent-lowdiff` (4x4 -> 8x8 latents of `bundled:fashion-vae`) against its flow
baseline `bundled:fashion-latent-flow`, or the paper's geometry (8x8 -> 16x16, second command below;
the text's 4x4 and 8x8 are then 8x8 and 16x16). Four tables, each FID of decoded samples in the bundled
classifier's feature space against the test reference (as benchmarks/latent_pair.py measures):

- oracle: the cascade's final (8x8) stage conditioned on REAL latents (an oracle condition) against
  the same stage fed by the 4x4 stage, beside the flow baseline. The oracle condition is the VAE
  latent of test image j (posterior sample, as `lowdiff dataset encode` makes the training data),
  downsampled to 4x4 by the pyramid and normalised with the model's 4x4 statistics, perturbed to
  the 4x4 stage's truncation sigma as training perturbs its conditions (the flow path
  (1 - sigma) y + sigma n), with the 4x4 stage's own start noise of seed j as n
  (`sample_cascade(handed_over=)`). A second oracle takes training latents of the same classes:
  samples steered by the test images themselves sit closer to the test reference than any model of
  the training set could, so that row bounds the first's advantage. If the oracle closes the gap to
  the baseline, the 4x4 stage is the bottleneck; if not, the 8x8 stage is.
- truncation: the 4x4 stage's NFE (where it hands over), the cascade and the oracle.
- steps: the final stage's steps, the cascade, the oracle and the baseline at as many steps.
- guidance: the guidance scale of the 4x4 stage against that of the 8x8 stage (the cascade), and
  the baseline at each scale.

Fairness: every row samples seeds seed .. seed + num - 1 with the classes of test images
0 .. num - 1 (sample j has test image j's class, in every row and model), so the class
distribution is the same everywhere; the oracle and the cascade share the stage plan, and the final
stage draws each seed's own noise in both (the skipped 4x4 stage still draws its start noise,
which the oracle uses to perturb its condition). Guidance acts at noise levels <= --cfg-sigma-max
(LightningDiT's interval, as the latent pair). FIDs are cached in --cache (an interrupted run
resumes; a part left out by --only is rendered from the cache when all its FIDs are there, and
--cached-only renders every part from the cache, measuring nothing).
The test latents are encoded once into --test-latents when that directory does not exist.

    OMP_NUM_THREADS=1 python benchmarks/latent_diagnosis.py --ref runs/fashion-test.npz \\
        --train-latents runs/fashion-latents --test-latents runs/fashion-test-latents
    OMP_NUM_THREADS=1 python benchmarks/latent_diagnosis.py --ref runs/fashion-test.npz \\
        --lowdiff bundled:fashion-latent16-lowdiff --baseline bundled:fashion-latent16-flow \\
        --train-latents runs/fashion-latents16 --test-latents runs/fashion-test-latents16 \\
        --cache docs/results/latent16-diagnosis-cache.json --json docs/results/latent16-diagnosis.json \\
        --tag latent16-diagnosis --oracle-cfg 2.5 --final-steps 10 20 --low-nfe 9 15 18 \\
        --cfg-low 1 2.5 --cfg-high 1 2.5 4        # the points published (docs/results.md)

Writes the --tag section of docs/results.md (default `latent-diagnosis`) and --json.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import torch

from lowdiff.data import open_dataset
from lowdiff.data.latents import LatentDataset, encode_dataset
from lowdiff.errors import ConfigError, LowdiffError
from lowdiff.eval.bench import device_name
from lowdiff.eval.evaluate import evaluate_pipeline, get_extractor
from lowdiff.pipeline import Pipeline

from _markdown import write_section
from frontier import cached, fid_key, reference_name

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
PARTS = ("oracle", "truncation", "steps", "guidance")
ARMS = ("baseline", "cascade", "oracle-test", "oracle-train")   # the flow baseline; LowDiff fed by its 4x4 stage,
                                                                # by test latents, by training latents


@dataclass
class Labelled:
    """A pipeline whose sample j (seed `seed` + j) has class labels[j] and, for an oracle, the clean
    low-resolution latent low[j] handed to the final stage (perturbed to the truncation sigma with
    the seed's own noise). Duck-types what `evaluate_pipeline` uses of a Pipeline."""
    pipe: Pipeline
    seed: int
    labels: list[int]
    low: torch.Tensor | None = None

    @property
    def image_shape(self):
        return self.pipe.image_shape

    def plan(self, stages):
        return self.pipe.plan(stages)

    def sample_batch(self, seeds, _labels, plan, bar=None):
        rows = [s - self.seed for s in seeds]
        return self.pipe.sample_batch(seeds, [self.labels[j] for j in rows], plan, bar,
                                      handed_over=None if self.low is None else self.oracle(rows))

    def oracle(self, rows: list[int]):
        low, precond = self.low[rows], self.pipe.preset.precond
        return lambda noise, sigma: precond.perturb(low.to(noise), sigma, noise)


class Measure:
    """FID of an arm (`ARMS`) with a stage plan, cached; without `measuring`, None when not cached."""

    def __init__(self, arms: dict[str, Labelled], specs: dict[str, str], args, extractor):
        self.arms, self.specs, self.args, self.extractor = arms, specs, args, extractor
        self.measuring = True

    def __call__(self, arm: str, plan) -> float | None:
        args = self.args
        key = fid_key(f"{self.specs[arm]}|{arm}|test classes", plan, "fp32", args.seed, args)
        if not self.measuring:
            cache = json.loads(Path(args.cache).read_text()) if Path(args.cache).exists() else {}
            return cache.get(key)
        return cached(args.cache, key, lambda: self.measure(arm, plan))

    def measure(self, arm: str, plan) -> float:
        t, args = time.perf_counter(), self.args
        ev = evaluate_pipeline(self.arms[arm], args.ref, self.extractor, "classifier", num=args.num, seed=args.seed,
                               stages=plan, batch=args.batch, progress=False)
        print(f"  FID {ev.fid:.3f} ({time.perf_counter() - t:.0f} s): {arm} {plan.nfe_per_stage} "
              f"cfg {[s.cfg_scale for s in plan]}", file=sys.stderr, flush=True)
        return ev.fid


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def part_oracle(m: Measure, plans: dict, args) -> tuple[list[str], list[dict]]:
    lines = [f"| guidance scale | flow baseline | LowDiff: {args.high} fed by the {args.low} stage | oracle: test "
             "latents | oracle: "
             "training latents, same classes | gap closed by the test oracle |", "|---|---|---|---|---|---|"]
    rows = []
    for w in args.oracle_cfg:
        fids = {arm: m(arm, plans[arm if arm == "baseline" else "cascade"].with_guidance([w], args.cfg_sigma_max))
                for arm in ARMS}
        gap = fids["cascade"] - fids["baseline"] if None not in fids.values() else None
        closed = f"{(fids['cascade'] - fids['oracle-test']) / gap:.0%}" if gap and gap > 0 else "-"
        lines.append(f"| {w:g} | " + " | ".join(fmt(fids[a]) for a in ARMS) + f" | {closed} |")
        rows.append({"cfg": w, **fids})
    return lines, rows


def part_truncation(m: Measure, plans: dict, args) -> tuple[list[str], list[dict]]:
    lines = [f"| {args.low} NFE | truncation sigma | LowDiff | oracle: test latents |", "|---|---|---|---|"]
    rows = []
    for n in args.low_nfe:
        plan = plans["cascade"].replace(0, nfe=n).with_guidance([args.cfg], args.cfg_sigma_max)
        sigma = plan.truncation_sigma(0)
        fids = {arm: m(arm, plan) for arm in ("cascade", "oracle-test")}
        mark = " (preset)" if n == plans["cascade"][0].nfe else ""
        lines.append(f"| {n}{mark} | {sigma:.3f} | {fmt(fids['cascade'])} | {fmt(fids['oracle-test'])} |")
        rows.append({"low_nfe": n, "truncation_sigma": sigma, **fids})
    return lines, rows


def part_steps(m: Measure, plans: dict, args) -> tuple[list[str], list[dict]]:
    lines = [f"| {args.high} steps | LowDiff NFE per stage | LowDiff | oracle: test latents | flow baseline, as "
             "many steps |",
             "|---|---|---|---|---|"]
    rows, final = [], plans["cascade"].final
    for k in args.final_steps:
        plan = plans["cascade"].replace(final, steps=k).with_guidance([args.cfg], args.cfg_sigma_max)
        fids = {arm: m(arm, plan) for arm in ("cascade", "oracle-test")}
        base = plans["baseline"].replace(0, steps=k).with_guidance([args.cfg], args.cfg_sigma_max)
        fids["baseline"] = m("baseline", base)
        mark = " (preset)" if k == plans["cascade"][final].steps else ""
        lines.append(f"| {k}{mark} | {nfe_text(plan)} | {fmt(fids['cascade'])} | {fmt(fids['oracle-test'])} | "
                     f"{fmt(fids['baseline'])} |")
        rows.append({"final_steps": k, **fids})
    return lines, rows


def part_guidance(m: Measure, plans: dict, args) -> tuple[list[str], list[dict]]:
    lines = [f"| {args.low} scale \\ {args.high} scale | " + " | ".join(f"{w:g}" for w in args.cfg_high) + " |",
             "|---|" + "---|" * len(args.cfg_high)]
    rows = []
    for low in args.cfg_low:
        fids = [m("cascade", plans["cascade"].with_guidance([low, high], args.cfg_sigma_max)) for high in args.cfg_high]
        lines.append(f"| {low:g} | " + " | ".join(fmt(f) for f in fids) + " |")
        rows += [{"cfg_low": low, "cfg_high": high, "cascade": f} for high, f in zip(args.cfg_high, fids)]
    base = [m("baseline", plans["baseline"].with_guidance([w], args.cfg_sigma_max)) for w in args.cfg_high]
    lines.append(f"| flow baseline at the {args.high} scale | " + " | ".join(fmt(f) for f in base) + " |")
    rows += [{"cfg": w, "baseline": f} for w, f in zip(args.cfg_high, base)]
    return lines, rows


PART_FUNCTIONS = {"oracle": part_oracle, "truncation": part_truncation, "steps": part_steps,
                  "guidance": part_guidance}
PART_TITLES = {
    "oracle": "Which stage costs the FID: the {high} stage on real latents (an oracle) against the {low} stage's",
    "truncation": "Where the {low} stage hands over (its NFE on its 20-step grid), guidance {cfg:g} on both stages",
    "steps": "The final stage's steps, guidance {cfg:g}",
    "guidance": "The guidance scale per stage: LowDiff's FID, the {low} stage's scale by row, the {high} stage's by "
                "column",
}


def nfe_text(plan) -> str:
    return "/".join(str(v) for v in plan.nfe_per_stage.values())


def low_latents(directory: str, rows: list[int], pipe: Pipeline, resolution: int) -> torch.Tensor:
    """The normalised latents `rows` of a latent directory at `resolution`, as the model's training saw them."""
    ds = LatentDataset(directory)
    if ds.manifest["vae"] != pipe.preset.latent.vae:
        raise ConfigError(f"{directory}: encoded with {ds.manifest['vae']}, the model with {pipe.preset.latent.vae}")
    return ds.pyramid(np.asarray(rows), None, [resolution], pipe.preset.latent)[resolution]


def matched_rows(train_labels: np.ndarray, labels: list[int]) -> list[int]:
    """For each class in `labels` in turn, the next training image of that class."""
    queues = {c: iter(np.flatnonzero(train_labels == c).tolist()) for c in set(labels)}
    return [next(queues[c]) for c in labels]


def encoded_test_latents(args, pipe: Pipeline) -> str:
    """--test-latents, encoded from --test-data with the model's VAE when it does not exist yet."""
    if not (Path(args.test_latents) / "latents.json").exists():
        print(f"encoding {args.test_data} into {args.test_latents}", file=sys.stderr, flush=True)
        lowest = pipe.preset.stages[0].resolution
        encode_dataset(open_dataset(args.test_data), pipe.preset.latent.vae, args.test_latents, lowest=lowest,
                       progress=False)
    return args.test_latents


def arms_of(args) -> tuple[dict[str, Labelled], dict[str, Pipeline]]:
    labels = open_dataset(args.test_data).labels
    if args.num > len(labels):
        raise ConfigError(f"--num {args.num}: the test set has {len(labels)} images (one per sample)")
    labels = labels[:args.num].tolist()
    pipes = {"cascade": Pipeline.from_pretrained(args.lowdiff), "baseline": Pipeline.from_pretrained(args.baseline)}
    low = pipes["cascade"].preset.stages[-2].resolution
    train = LatentDataset(args.train_latents).labels
    arms = {"baseline": Labelled(pipes["baseline"], args.seed, labels),
            "cascade": Labelled(pipes["cascade"], args.seed, labels),
            "oracle-test": Labelled(pipes["cascade"], args.seed, labels,
                                    low_latents(encoded_test_latents(args, pipes["cascade"]), list(range(args.num)),
                                                pipes["cascade"], low)),
            "oracle-train": Labelled(pipes["cascade"], args.seed, labels,
                                     low_latents(args.train_latents, matched_rows(train, labels), pipes["cascade"],
                                                 low))}
    return arms, pipes


def markdown(tables: dict[str, list[str]], args, command: str, pipes: dict[str, Pipeline]) -> str:
    plan = pipes["cascade"].preset.stages
    lines = [f"### Which stage costs the FID: the {args.low} -> {args.high} latent pair (issue 35, item 1)", "",
             f"Generated by `{command}` on {date.today().isoformat()} ({device_name('cpu')}). FID of {args.num} "
             f"decoded samples (seeds {args.seed}-{args.seed + args.num - 1}; sample j has the class of test image j "
             "in every row) in the bundled classifier's feature space against the test set. LowDiff: "
             f"`{args.lowdiff}` with its preset plan ({nfe_text(plan)} Euler NFE, the {args.low} stage stopping at "
             f"sigma {plan.truncation_sigma(0):.3f}) unless a row says otherwise; baseline `{args.baseline}` (20 Euler "
             f"steps). Guidance at noise levels <= {args.cfg_sigma_max:g}. The oracle's condition: the test image's "
             f"VAE latent (posterior sample), box-downsampled to {args.low} and normalised as in training, perturbed "
             f"to the truncation sigma with the {args.low} stage's own start noise of the seed; the final stage's "
             "plan and noise are the cascade's. The training-latent oracle takes, for each sample, the next training image of "
             "its class: the test oracle's samples are steered by the very images of the reference."]
    for part in PARTS:
        title = PART_TITLES[part].format(cfg=args.cfg, low=args.low, high=args.high)
        body = tables.get(part) or [f"(not measured: `--only {part}`)"]
        if part in tables and "-" in {cell.strip() for line in body for cell in line.split("|")}:
            body = [*body, "", "(-: not measured yet; `--only " + part + "` measures the rest)"]
        lines += ["", f"**{title}.**", "", *body]
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lowdiff", default="bundled:fashion-latent-lowdiff")
    p.add_argument("--baseline", default="bundled:fashion-latent-flow")
    p.add_argument("--ref", default="runs/fashion-test.npz", help="test reference statistics (`lowdiff eval ref`)")
    p.add_argument("--test-data", dest="test_data", default="fashion-mnist:test",
                   help="the test images (their classes label every sample; their latents feed the oracle)")
    p.add_argument("--test-latents", dest="test_latents", default="runs/fashion-test-latents",
                   help="their latents (`lowdiff dataset encode`); encoded here when the directory does not exist")
    p.add_argument("--train-latents", dest="train_latents", default="runs/fashion-latents",
                   help="the training latents (`lowdiff dataset encode fashion-mnist --vae bundled:fashion-vae "
                        "--lowest 4`)")
    p.add_argument("--num", type=int, default=2000, help="samples per FID (at most the test set's size)")
    p.add_argument("--seed", type=int, default=100000, help="first seed")
    p.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS),
                   help="measure these parts; the others are rendered from the cache when complete")
    p.add_argument("--cached-only", dest="cached_only", action="store_true",
                   help="measure nothing: render every part from the cache, '-' where a FID is not measured yet")
    p.add_argument("--oracle-cfg", dest="oracle_cfg", type=float, nargs="+", default=[1.0, 2.5],
                   help="guidance scales of the oracle table (every stage)")
    p.add_argument("--cfg", type=float, default=2.5, help="guidance scale of the truncation and steps sweeps")
    p.add_argument("--low-nfe", dest="low_nfe", type=int, nargs="+", default=[3, 6, 9, 12, 15, 18])
    p.add_argument("--final-steps", dest="final_steps", type=int, nargs="+", default=[5, 10, 15, 20])
    p.add_argument("--cfg-low", dest="cfg_low", type=float, nargs="+", default=[1.0, 2.5, 4.0])
    p.add_argument("--cfg-high", dest="cfg_high", type=float, nargs="+", default=[1.0, 2.5, 4.0])
    p.add_argument("--cfg-sigma-max", dest="cfg_sigma_max", type=float, default=0.89)
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--cache", default=str(RESULTS / "latent-diagnosis-cache.json"))
    p.add_argument("--json", default=str(RESULTS / "latent-diagnosis.json"))
    p.add_argument("--out", default=str(ROOT / "docs" / "results.md"))
    p.add_argument("--tag", default="latent-diagnosis", help="section tag in --out (one per pair)")
    args = p.parse_args(argv)
    if args.num < 2:
        raise ConfigError(f"--num {args.num}: an FID needs at least 2 samples")
    if not Path(args.ref).is_file():
        raise ConfigError(f"--ref {args.ref}: no such statistics file (make it with `lowdiff eval ref`)")
    args.ref_name = reference_name(args.ref)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    command = "python benchmarks/latent_diagnosis.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    arms, pipes = arms_of(args)
    args.low, args.high = (f"{s.resolution}x{s.resolution}" for s in pipes["cascade"].preset.stages[-2:])
    plans = {"cascade": pipes["cascade"].preset.stages, "baseline": pipes["baseline"].preset.stages}
    specs = {arm: args.baseline if arm == "baseline" else args.lowdiff for arm in ARMS}
    measure = Measure(arms, specs, args, get_extractor("classifier"))
    tables, data = {}, {}
    for part in sorted(PARTS, key=lambda p: p not in args.only):      # the measured parts first
        measure.measuring = part in args.only and not args.cached_only
        lines, rows = PART_FUNCTIONS[part](measure, plans, args)
        fids = [v for r in rows for k, v in r.items() if k in ARMS]
        if measure.measuring or None not in fids or (args.cached_only and any(v is not None for v in fids)):
            tables[part], data[part] = lines, rows
    data = {part: data[part] for part in PARTS if part in data}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"command": command, "date": date.today().isoformat(),
                                           "device": device_name("cpu"), "num": args.num, "seed": args.seed,
                                           "parts": data}, indent=1))
    text = markdown(tables, args, command, pipes)
    write_section(Path(args.out), args.tag, text)
    print(text)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    try:
        main()
    except LowdiffError as e:                           # bad input: one line, before any sampling
        sys.exit(f"error: {e}")
