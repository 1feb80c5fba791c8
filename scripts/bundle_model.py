"""Copy a trained run's EMA weights (fp16) and config into the package as the bundled
model that `lowdiff sample` and `make demo` use without --checkpoint.

    python scripts/bundle_model.py runs/fm-lowdiff-cond
"""
import sys

import torch

from lowdiff.pipeline import BUNDLED
from lowdiff.train import checkpoint as ckpt


def main(run_dir: str) -> None:
    preset = ckpt.load_config(run_dir)
    state = ckpt.load_model_state(run_dir)
    ckpt.save_model(BUNDLED, preset, {k: v.half() if v.is_floating_point() else v for k, v in state.items()})
    size = sum(p.stat().st_size for p in BUNDLED.iterdir()) / 1e6
    print(f"bundled {preset.name} from {run_dir} into {BUNDLED} ({size:.1f} MB)")


if __name__ == "__main__":
    main(sys.argv[1])
