"""`lowdiff train`: train a preset; re-running the same command resumes."""
from __future__ import annotations

import os
import sys

from ..checks import batch_size, check_device, check_output, nonnegative_int, positive_float, seed_value
from ..errors import ConfigError
from ..presets import get_preset
from .common import add_device, add_progress, stopped_status

OVERRIDES = ("batch", "batch_gpu", "lr", "seed", "duration_kimg", "checkpoint_kimg", "log_kimg", "precision", "compile")


def register(sub) -> None:
    s = sub.add_parser("train", help="train a preset; re-run the same command to resume",
                       description="Train a preset. Re-running the same command resumes from the newest valid "
                       "state in --out; SIGTERM saves a state and exits 0 (preemption), Ctrl-C saves one and exits "
                       "130. Options left out take the preset's values (`lowdiff info PRESET` prints them). "
                       "Multi-GPU / multi-node: torchrun --nproc_per_node=N -m lowdiff.cli train ... "
                       "Losses go to --out/log.jsonl, and to TensorBoard (--out/tensorboard) when the tensorboard "
                       "package is installed. On a CPU shared with other jobs set OMP_NUM_THREADS to the free cores.")
    s.add_argument("--preset", required=True, help="preset name or config.json")
    s.add_argument("--data", help="dataset: fashion-mnist, emoji[:RES], a cifar-10-python.tar.gz, an image folder/zip, "
                   "a latent directory (`lowdiff dataset encode`), synthetic[:N[:RES]] (default: the preset's)")
    s.add_argument("--out", required=True, help="run directory (checkpoints, logs, final model)")
    add_device(s)
    s.add_argument("--batch", type=batch_size, help="global batch size (default: the preset's)")
    s.add_argument("--batch-gpu", dest="batch_gpu", type=nonnegative_int,
                   help="per-process micro-batch, for gradient accumulation (default: no accumulation)")
    s.add_argument("--lr", type=positive_float, help="learning rate (default: the preset's)")
    s.add_argument("--precision", choices=["fp32", "bf16", "fp16"], help="mixed precision (default: the preset's)")
    s.add_argument("--compile", action="store_true", default=None, help="torch.compile the network")
    s.add_argument("--seed", type=seed_value, help="training seed (default: the preset's, 0)")
    length = s.add_mutually_exclusive_group()
    length.add_argument("--duration-kimg", dest="duration_kimg", type=positive_float,
                        help="training length in thousands of images (default: the preset's)")
    length.add_argument("--duration-tflop", dest="duration_tflop", type=positive_float, metavar="TFLOP",
                        help="training length as training compute: images x the preset's training FLOPs per image "
                        "(`lowdiff info PRESET`; forward + backward at every stage resolution)")
    length.add_argument("--match-compute", dest="match_compute", metavar="RUN_DIR",
                        help="train until this run's compute equals the compute RUN_DIR's log records (a run of "
                        "the same dataset), e.g. a cascade at its baseline's compute")
    s.add_argument("--checkpoint-kimg", dest="checkpoint_kimg", type=positive_float,
                   help="training-state interval in kimg (default: the preset's)")
    s.add_argument("--log-kimg", dest="log_kimg", type=positive_float, help="loss log interval in kimg "
                   "(default: the preset's)")
    s.add_argument("--snapshot-kimg", dest="snapshot_kimg", type=positive_float, metavar="KIMG",
                   help="every KIMG write the EMA as a model directory with its compute (kimg, train_tflop, "
                   "thread_seconds) under --out/snapshots/kimg-NNNNNN/ (loadable by sample / eval fid --checkpoint); "
                   "snapshot k equals a run of --duration-kimg k x KIMG")
    s.add_argument("--init-from", dest="init_from", metavar="MODEL",
                   help="start a new run from a trained single-resolution model of the same architecture: a lowdiff "
                   "model directory, bundled:NAME (e.g. bundled:fashion-edm-cond) or a .safetensors state dict "
                   "exported from EDM's code (README); at step 0 the top-resolution stage computes what MODEL "
                   "computes. A resumed run continues from its state")
    s.add_argument("--restart", action="store_true", help="discard the run in --out (states, log, model) and start "
                   "afresh; needed when its states are corrupt or it has a model but no state")
    add_progress(s)
    s.set_defaults(func=run)


def run(args) -> int | None:
    from ..distributed import peer_loss_as_error
    from ..train.init_from import load_baseline_for
    from ..train.loop import check_same_data, open_training_data, run_training
    check_device(args.device)
    check_output(args.out, directory=True)
    preset = get_preset(args.preset)
    for key in OVERRIDES:
        if getattr(args, key) is not None:
            setattr(preset.train, key, getattr(args, key))
    preset.validate()                    # every number and size checked before the data are read
    matched = size_by_compute(preset, args)
    baseline = load_baseline_for(args.init_from, preset) if args.init_from else None
    dataset = open_training_data(preset, args.data)
    if matched is not None:
        check_same_data(matched, dataset)
    main_rank = os.environ.get("RANK", "0") == "0"
    if main_rank:
        sized = (f" for {preset.train.duration_kimg:g} kimg (the compute asked for)"
                 if args.match_compute or args.duration_tflop else "")
        print(f"training {preset.name} on {dataset.name} ({len(dataset)} images){sized} -> {args.out}", file=sys.stderr)
    with peer_loss_as_error(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))):
        trainer = run_training(preset, dataset, args.out, device=args.device, progress=not args.no_progress,
                               restart=args.restart, init_from=baseline, snapshot_kimg=args.snapshot_kimg)
    if trainer.stopped_by is not None:
        return stopped_status(trainer.stopped_by)
    if main_rank:
        print(f"run directory {trainer.run_dir} (model.safetensors holds the EMA weights)", file=sys.stderr)
    return None


def size_by_compute(preset, args):
    """--duration-tflop / --match-compute as the preset's duration_kimg; the matched run's record, if any."""
    from ..train.compute import duration_kimg_for, recorded_compute
    matched = recorded_compute(args.match_compute) if args.match_compute else None
    if matched is not None:
        tflop, option = matched.tflop, f"--match-compute {args.match_compute}"
    elif args.duration_tflop is not None:
        tflop, option = args.duration_tflop, "--duration-tflop"
    else:
        return None
    preset.train.duration_kimg = duration_kimg_for(preset, tflop, option)
    try:
        preset.validate()
    except ConfigError as e:
        raise ConfigError(f"{option}: {tflop:g} TFLOP is {preset.train.duration_kimg:g} kimg of "
                          f"{preset.name}, out of range ({e})") from None
    return matched
