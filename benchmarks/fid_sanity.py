"""Sanity figures for the FID protocol on real data (issue: evaluation): FID of the
Fashion-MNIST test set against itself, between its two halves (even / odd indices, so
both hold every class), and between the train and test sets; IS of the real test set.

    python benchmarks/fid_sanity.py
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from lowdiff.data import open_dataset
from lowdiff.eval.evaluate import get_extractor
from lowdiff.eval.features import extract
from lowdiff.eval.metrics import frechet_distance, inception_score, statistics


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classifier", help="classifier directory (default: lowdiff eval's, the bundled one)")
    args = p.parse_args()
    extractor = get_extractor("classifier", args.classifier)
    test, _ = extract(extractor, open_dataset("fashion-mnist:test").images)
    train, _ = extract(extractor, open_dataset("fashion-mnist:train").images)
    _, logits = extract(extractor, open_dataset("fashion-mnist:test").images)

    def fid(a, b):
        return frechet_distance(*statistics(a), *statistics(b))

    report = {
        "fid_test_vs_itself": fid(test, test),
        "fid_test_even_vs_odd (5000 vs 5000)": fid(test[0::2], test[1::2]),
        "fid_train_vs_test (60000 vs 10000)": fid(train, test),
        "fid_train_first_1000_vs_test": fid(train[:1000], test),
        "inception_score_test (10 splits)": inception_score(logits),
        "feature_dim": int(test.shape[1]),
    }
    print(json.dumps(report, indent=1, default=lambda v: list(v) if isinstance(v, tuple) else float(v)))


if __name__ == "__main__":
    np.set_printoptions(precision=6)
    main()
