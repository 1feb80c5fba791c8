"""`lowdiff tune`: search a trained model's stage plan for the lowest FID within a budget."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..checks import at_least_2, batch_size, check_output, positive_float, positive_int, seed_value
from ..errors import ConfigError
from ..seeds import Seeds
from .common import add_device, add_features_args, add_progress, add_speed_args, extractor_and_reference, \
    inference_options, joined, load_plan_file


def register(sub) -> None:
    from ..diffusion.solvers import SOLVERS, flow_solvers_text, tune_defaults
    from ..eval.tune_budget import COSTS, PROGRESSIVE_MODES
    from ..eval.tune_space import CFG_FACTOR, CFG_INTERVALS, CFG_STEP
    s = sub.add_parser("tune", help="search per-stage steps, truncation, sigma ranges, solvers and guidance for the "
                       "lowest FID within a budget; print the Pareto front, write the plan and a plot",
                       description="Search over a trained model's stage plan (per stage: solver, steps, truncation "
                       "NFE, sigma_max, sigma_min, rho, warm start, and a class-conditional model's guidance scale "
                       "and interval), for a cascade or a single-resolution "
                       "baseline alike: starts from the model's plan and from few-step plans, descends one "
                       "coordinate at a time, screens every plan on --screen-num samples and confirms the best "
                       "--confirm on --num (the same seeds for every plan). Prints the FID / throughput Pareto "
                       "front, writes the lowest-FID plan within the budget (use it with `lowdiff sample --plan "
                       "FILE`) and plots the front.")
    s.add_argument("--checkpoint", help="model directory or bundled:NAME (default: the bundled model)")
    s.add_argument("--ref", required=True, help="reference statistics .npz (`lowdiff eval ref`)")
    add_features_args(s)
    s.add_argument("--budget-nfe", dest="budget_nfe", type=positive_float,
                   help="effective NFE at most (paper App. B: low-resolution evaluations weighted by their cost)")
    s.add_argument("--budget-latency", dest="budget_latency", type=positive_float,
                   help="predicted seconds per image at most (measured per-evaluation latency x NFE)")
    s.add_argument("--cost", default=COSTS[0], choices=COSTS,
                   help="per-evaluation cost behind effective NFE (default latency, measured here)")
    s.add_argument("-n", "--num", type=at_least_2, default=500,
                   help="samples per FID of the confirmed plans (default 500; -n N under torchrun)")
    s.add_argument("--screen-num", dest="screen_num", type=at_least_2,
                   help="samples per FID when screening, the first of the --num seeds, at most --num (default 200, "
                   "or --num when smaller)")
    s.add_argument("--confirm", type=positive_int, default=8,
                   help="best screened plans evaluated again on --num samples (default 8)")
    s.add_argument("--seed", type=seed_value, default=0, help="first seed; every plan uses seeds seed..seed+num-1")
    s.add_argument("--batch", type=batch_size, default=250, help="images per batch (default 250)")
    s.add_argument("--trials", type=positive_int, default=100, help="plans screened at most (default 100)")
    defaults = tune_defaults()
    s.add_argument("--solvers", default=",".join(defaults), help="solvers to try, comma-separated (default "
                   f"{','.join(defaults)}; also {', '.join(n for n in SOLVERS if n not in defaults)}); the "
                   "one-evaluation ones also make the few-step starts; " + flow_solvers_text())
    s.add_argument("--start", metavar="PLAN", action="append", default=[],
                   help="also start the search from this plan JSON (e.g. one `lowdiff tune` chose at a larger "
                   "budget), fitted to the budget and screened before the search's own starts; repeatable")
    s.add_argument("--no-warm-start", dest="warm_start", action="store_false",
                   help="do not search warm-started stages (start=upsampled)")
    s.add_argument("--tune-guidance", dest="guidance", action=argparse.BooleanOptionalAction, default=None,
                   help=f"move each stage's classifier-free guidance scale (cfg_scale: +-{CFG_STEP:g}, x or / "
                   f"{CFG_FACTOR:g}, +1, or 1 = unguided; never below 1) and its interval (cfg_sigma_max: "
                   + "; ".join(f"{', '.join(f'{v:g}' for v in values)} on the {kind} schedule"
                               for kind, values in CFG_INTERVALS.items())
                   + "); a guided evaluation costs two in the budget, and each guidance move is "
                   "fitted to it. Default: on for a class-conditional model trained with label dropout (the null "
                   "class guidance needs) or whose plan guides already, off otherwise; needs a class-conditional model")
    s.add_argument("--progressive", default="also", choices=PROGRESSIVE_MODES,
                   help="a single-resolution model: also search progressive plans (the network run at one or two "
                   "lower resolutions first, `lowdiff sample --help`, --stage), only those, or no (default also)")
    s.add_argument("--out", required=True, help="the chosen plan, JSON")
    s.add_argument("--plot", help="PNG of the Pareto front (default: --out with .png)")
    s.add_argument("--save-as", dest="save_as", metavar="NAME",
                   help="also add the chosen plan to the model directory's plans.json under NAME, with the FID and "
                   "img/s measured here (then `lowdiff sample --checkpoint DIR --plan NAME`; the model's default plan "
                   "follows the rule of `lowdiff sample --help`); not for bundled models: copy the directory first")
    add_device(s)
    add_progress(s)
    add_speed_args(s, plan=False)
    s.set_defaults(func=run)


def run(args) -> None:
    if args.budget_nfe is None and args.budget_latency is None:
        raise ConfigError("give a budget: --budget-nfe N (effective NFE) and/or --budget-latency SECONDS (per image)")
    if args.screen_num is not None and args.screen_num > args.num:
        raise ConfigError(f"--screen-num {args.screen_num} is more than -n/--num {args.num}: the screening seeds are "
                          "the first of the --num seeds; lower --screen-num or raise -n")
    Seeds.count(args.seed, args.num)                 # every seed within the generator's range
    plot = args.plot or str(Path(args.out).with_suffix(".png"))
    check_output(args.out)
    check_output(plot, "--plot")
    args.start_plans = [(Path(path).name, load_plan_file(path, "--start")) for path in args.start]    # before any work
    if args.save_as is not None:
        check_save_as(args.save_as, args.checkpoint)
    with joined(args.device) as world:
        _tune(args, world, plot)


def _tune(args, world, plot: str) -> None:
    from ..eval.tune import Tuner, TuneOptions, format_table, plot_front, save_tuned_plan
    from ..pipeline import load
    from ..progress import image_bar
    pipe = load(args.checkpoint, device=world.device, options=inference_options(args))
    extractor, ref = extractor_and_reference(args, pipe.image_shape, world)
    opts = TuneOptions(budget_nfe=args.budget_nfe, budget_latency=args.budget_latency, trials=args.trials,
                       num=args.num, screen_num=args.screen_num or min(200, args.num), confirm=args.confirm,
                       seed=args.seed, batch=args.batch, solvers=tuple(args.solvers.split(",")), cost=args.cost,
                       warm_start=args.warm_start, progressive=args.progressive, guidance=args.guidance)
    most = opts.trials * min(opts.screen_num, opts.num) + opts.confirm * opts.num     # images, at most
    bar = image_bar(most, "tune", disable=args.no_progress or not world.is_main)

    def progress(trial, n):
        bar.set_postfix_str(f"plan {n}: FID {trial.fid:.3f} at {trial.effective_nfe} eff. NFE ({trial.move})"[:90])

    tuner = Tuner(pipe, ref, extractor, args.features, opts, progress, world, args.start_plans, bar)
    chosen = tuner.run()
    bar.total = bar.n                    # the search may end before its most plans
    bar.close()
    if not world.is_main:
        return
    save_tuned_plan(args.out, tuner, chosen, checkpoint=args.checkpoint or "bundled", feature_space=args.features,
                    ref=str(args.ref), start_plans=args.start, inference=dict(vars(pipe.options)))
    if args.save_as is not None:
        _save_into_model(args, tuner, chosen, world)
    trials = list(tuner.trials.values())
    print(format_table(trials, chosen))
    plot_front(trials, chosen, plot, title=f"{pipe.preset.name}: {len(trials)} plans screened on "
               f"{tuner.screen_num} samples")
    print(f"wrote the plan to {args.out} (lowdiff sample --plan {args.out}) and the front to {plot}", file=sys.stderr)


def check_save_as(name: str, checkpoint: str | None) -> None:
    """--save-as NAME: a new plan name for a model directory this user may write (before any work)."""
    from ..plans import CONFIG_PLAN, PLANS_FILE
    from ..storage import model_dir
    if checkpoint is None or checkpoint.startswith("bundled:"):
        raise ConfigError(f"--save-as {name}: bundled models are part of the installed package; copy the model "
                          "directory (cp -r) and tune the copy (--checkpoint DIR)")
    if name == CONFIG_PLAN or not name or not all(c.isalnum() or c in "-_." for c in name):
        raise ConfigError(f"--save-as {name!r}: a plan name is letters, digits, '-', '_' or '.', and not "
                          f"{CONFIG_PLAN!r} (config.json's plan)")
    check_output(model_dir(checkpoint) / PLANS_FILE, "--save-as")


def _save_into_model(args, tuner, chosen, world) -> None:
    from ..eval.bench import device_name
    from ..plans import Figures, ModelPlans, NamedPlan
    from ..storage import model_dir
    o = tuner.opts
    budget = o.budget_nfe or o.budget_latency
    figures = Figures(fid=chosen.fid_confirmed if chosen.fid_confirmed is not None else chosen.fid, samples=o.num,
                      images_per_s=chosen.images_per_s, device=device_name(str(world.device)), batch=o.batch,
                      seeds=f"{o.seed}-{o.seed + o.num - 1}", feature_space=args.features,
                      source=f"lowdiff tune (budget: {budget}; plan file {args.out})")
    plans = ModelPlans.read(args.checkpoint)
    replaced = args.save_as in plans.plans
    plan = NamedPlan(args.save_as, chosen.stages, f"tuned by lowdiff tune at budget {budget}", figures)
    plans.add(plan)
    path = plans.write(model_dir(args.checkpoint))
    compared = plan in plans.comparable()
    print(f"{'replaced' if replaced else 'added'} plan {args.save_as!r} in {path}; the model's default plan is "
          f"{plans.default().name!r}" + ("" if compared else "; the model's other plans were measured differently "
                                         "(device, samples or seeds), so the default rule does not compare this one: "
                                         f"use --plan {args.save_as}"), file=sys.stderr)
