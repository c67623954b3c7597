"""Which images each strategy asked for on shortcut data: the share whose feature lies.

Quoted by docs/results.md and docs/lab/ (the shortcut benchmark).

On a pool built by ``xal run --shortcut KIND:AGREE`` the injected feature disagrees with
the label on about ``1 - AGREE`` of the images. A strategy that asks for those images
more often than that is choosing the cases the shortcut gets wrong. This reads the
``queried`` column of each results folder (rounds after the initial set), rebuilds the
pool with the function ``xal run`` builds it with (``shortcut_split``) and prints, per
strategy, the share of queried images whose feature disagrees with their label, with
the pool's own share beside it. Pool labels are read here, after the runs, never by
the strategies.

    python benchmarks/shortcut_queries.py --mri ../shared/data/brain-tumor-figshare \
        --shortcut marker:0.9 mri_marker_none mri_marker_project
"""

import argparse
import json
from pathlib import Path

import numpy as np

from xal_sklearn.datasets import load_brain_tumor_figshare, shortcut_split
from xal_sklearn.experiments import load_results


def shortcut_pool(path, kind, agree, image_size=64, test_size=0.2):
    """The pool of ``xal run --data brain-tumor-figshare:PATH --shortcut KIND:AGREE``."""
    data = load_brain_tumor_figshare(path, image_size=image_size)
    return shortcut_split(data, kind, agree, test_size=test_size)[0]


def disagreeing_share(folder, disagree):
    """{strategy: per-seed share of queried images whose feature disagrees}."""
    config = json.loads((Path(folder) / "config.json").read_text())
    if config["dataset"]["n_samples"] != len(disagree):
        raise ValueError(f"{folder} was run on {config['dataset']['n_samples']} pool images, "
                         f"the rebuilt pool has {len(disagree)}: another --data or --shortcut.")
    table = load_results(folder)
    table = table[table["round"] > 0]
    out = {}
    for (strategy, seed), rows in table.groupby(["strategy", "seed"]):
        queried = np.concatenate([json.loads(q) for q in rows["queried"]]).astype(int)
        out.setdefault(strategy, []).append(float(disagree[queried].mean()))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", help="results folders of xal run --shortcut")
    p.add_argument("--mri", required=True, help="the brain-tumour figshare folder")
    p.add_argument("--shortcut", required=True, help="KIND:AGREE, as given to xal run")
    p.add_argument("--image-size", type=int, default=64)
    args = p.parse_args()
    kind, agree = args.shortcut.split(":")
    pool = shortcut_pool(args.mri, kind, float(agree), args.image_size)
    disagree = pool.shortcut.feature_class != np.asarray(pool.y)
    print(f"{kind}: the feature disagrees with the label on {disagree.mean():.3f} of the "
          f"{len(disagree)} pool images")
    for folder in args.folders:
        for strategy, shares in disagreeing_share(folder, disagree).items():
            print(f"{Path(folder).name:28s} {strategy:14s} queried images disagreeing: "
                  f"{np.mean(shares):.3f} (seeds {', '.join(f'{s:.3f}' for s in shares)})")


if __name__ == "__main__":
    main()
