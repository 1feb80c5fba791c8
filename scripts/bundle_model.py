"""Copy a trained run's EMA weights (fp16) and config into the package as a bundled model
(`lowdiff sample --checkpoint bundled:NAME`; the default one is what `lowdiff sample` and
`make demo` use without --checkpoint).

    python scripts/bundle_model.py runs/fm-lowdiff-cond fashion-lowdiff-cond
    python scripts/bundle_model.py runs/fm-edm-cond fashion-edm-cond
"""
import sys

from lowdiff import bundled, storage


def main(run_dir: str, name: str) -> None:
    preset = storage.load_config(run_dir)
    state, source = storage.load_weights(run_dir)
    if source != storage.MODEL_FILE:
        sys.exit(f"{run_dir} has not finished training ({source}); bundle finished models only")
    out = bundled.ASSETS / name
    storage.save_pretrained(out, preset, {k: v.half() if v.is_floating_point() else v for k, v in state.items()})
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    print(f"bundled {preset.name} from {run_dir} as bundled:{name} ({size:.1f} MB)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
