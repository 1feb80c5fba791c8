"""`lowdiff train`: train a preset; re-running the same command resumes."""
from __future__ import annotations

import os
import sys

from ..checks import batch_size, check_device, check_output, nonnegative_int, positive_float, seed_value
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
    s.add_argument("--duration-kimg", dest="duration_kimg", type=positive_float,
                   help="training length in thousands of images (default: the preset's)")
    s.add_argument("--checkpoint-kimg", dest="checkpoint_kimg", type=positive_float,
                   help="training-state interval in kimg (default: the preset's)")
    s.add_argument("--log-kimg", dest="log_kimg", type=positive_float, help="loss log interval in kimg "
                   "(default: the preset's)")
    s.add_argument("--restart", action="store_true", help="discard the run in --out (states, log, model) and start "
                   "afresh; needed when its states are corrupt or it has a model but no state")
    add_progress(s)
    s.set_defaults(func=run)


def run(args) -> int | None:
    from ..distributed import peer_loss_as_error
    from ..train.loop import open_training_data, run_training
    check_device(args.device)
    check_output(args.out, directory=True)
    preset = get_preset(args.preset)
    for key in OVERRIDES:
        if getattr(args, key) is not None:
            setattr(preset.train, key, getattr(args, key))
    preset.validate()                    # every number and size checked before the data are read
    dataset = open_training_data(preset, args.data)
    main_rank = os.environ.get("RANK", "0") == "0"
    if main_rank:
        print(f"training {preset.name} on {dataset.name} ({len(dataset)} images) -> {args.out}", file=sys.stderr)
    with peer_loss_as_error(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))):
        trainer = run_training(preset, dataset, args.out, device=args.device, progress=not args.no_progress,
                               restart=args.restart)
    if trainer.stopped_by is not None:
        return stopped_status(trainer.stopped_by)
    if main_rank:
        print(f"run directory {trainer.run_dir} (model.safetensors holds the EMA weights)", file=sys.stderr)
    return None
