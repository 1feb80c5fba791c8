"""Copy a trained run's EMA weights (fp16) and config into the package as a bundled model
(`lowdiff sample --checkpoint bundled:NAME`; the default one is what `lowdiff sample` and
`make demo` use without --checkpoint), with the run's training compute (its log's last record)
in training.json.

    python scripts/bundle_model.py runs/fm-lowdiff-cond fashion-lowdiff-cond
    python scripts/bundle_model.py runs/fm-edm-cond fashion-edm-cond
    python scripts/bundle_model.py runs/ct-lowdiff fashion-lowdiff-ct
    python scripts/bundle_model.py runs/ct-edm fashion-edm-ct
"""
import sys
from pathlib import Path

from lowdiff import bundled, storage
from lowdiff.files import write_json
from lowdiff.train.compute import TRAINING_FILE, model_compute


def main(run_dir: str, name: str) -> None:
    preset, recorded = storage.read_config(run_dir)
    state, source = storage.load_weights(run_dir, recorded)       # checked against config.json's SHA-256
    if source != storage.MODEL_FILE:
        sys.exit(f"{run_dir} has not finished training ({source}); bundle finished models only")
    out = bundled.ASSETS / name
    storage.save_pretrained(out, preset, {k: v.half() if v.is_floating_point() else v for k, v in state.items()})
    write_json(out / TRAINING_FILE, {"run": Path(run_dir).name} | model_compute(run_dir))
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    print(f"bundled {preset.name} from {run_dir} as bundled:{name} ({size:.1f} MB)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
