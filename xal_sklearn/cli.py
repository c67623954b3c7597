"""The ``xal`` command: run active-learning experiments and report them."""

import argparse
import sys
from pathlib import Path

STRATEGY_NAMES = ("random", "entropy", "margin", "least_confident", "misalignment", "dual")


def _strategies(names, alphas, uncertainty):
    from modAL.uncertainty import entropy_sampling, margin_sampling, uncertainty_sampling

    from . import dual_criterion_sampling, misalignment_sampling, random_sampling

    simple = {"random": random_sampling, "entropy": entropy_sampling, "margin": margin_sampling,
              "least_confident": uncertainty_sampling}
    out = {}
    for name in names:
        if name == "dual":
            for a in alphas:
                out[f"dual a={a:g}"] = (dual_criterion_sampling,
                                        {"alpha": a, "uncertainty": uncertainty})
        elif name == "misalignment":
            out[name] = (misalignment_sampling, {"uncertainty": uncertainty})
        else:
            out[name] = simple[name]
    return out


def _load_data(spec, image_size, n_samples, seed):
    from .datasets import load_brain_tumor_figshare, load_image_folder, make_lesion_phantoms

    kind, _, path = spec.partition(":")
    if kind == "phantoms":
        return make_lesion_phantoms(n_samples, image_size or 48, shortcut=0.9,
                                    random_state=seed), "synthetic phantoms (shortcut 0.9)"
    if not path:
        raise ValueError(f"--data {kind} needs a path: {kind}:PATH.")
    if kind == "folder":
        return load_image_folder(path, image_size=image_size or 128, n_jobs=-1), f"folder {path}"
    if kind == "brain-tumor-figshare":
        return (load_brain_tumor_figshare(path, image_size=image_size or 128),
                "brain-tumour MRI (figshare, Cheng et al.)")
    raise ValueError(f"Unknown --data {spec!r}; use phantoms, folder:PATH or "
                     "brain-tumor-figshare:PATH.")


def _parser():
    p = argparse.ArgumentParser(prog="xal", description="Explainability-guided active learning.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="simulate active learning; with no options a short demo "
                                     "on synthetic phantoms",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    run.add_argument("--data", default="phantoms",
                     help="phantoms | folder:PATH | brain-tumor-figshare:PATH")
    run.add_argument("--n-samples", type=int, default=600, help="phantoms only")
    run.add_argument("--strategies", default="random,entropy,dual",
                     help=f"comma-separated, of {', '.join(STRATEGY_NAMES)}")
    run.add_argument("--alpha", default="0.3", help="comma-separated alphas for dual")
    run.add_argument("--uncertainty", default="entropy",
                     choices=("entropy", "margin", "least_confident"))
    run.add_argument("--initial", type=int, default=30, help="initial labelled samples")
    run.add_argument("--query-size", type=int, default=20, help="labels per round")
    run.add_argument("--budget", type=int, default=110, help="labels in total")
    run.add_argument("--seeds", type=int, default=2, help="number of seeds (0, 1, ...)")
    run.add_argument("--test-size", type=float, default=0.2, help="fraction of groups")
    run.add_argument("--image-size", type=int, default=None,
                     help="default 48 for phantoms, 128 otherwise")
    run.add_argument("--epochs", type=int, default=30)
    run.add_argument("--batch-size", type=int, default=32)
    run.add_argument("--lr", type=float, default=1e-3)
    run.add_argument("--n-jobs", type=int, default=1)
    run.add_argument("--out", default=None, help="results folder (default xal_results/<data>)")
    run.add_argument("--force", action="store_true",
                     help="discard a results folder of another configuration")
    run.add_argument("--no-progress", action="store_true")
    rep = sub.add_parser("report", help="write report.md and PNGs for a results folder")
    rep.add_argument("results_dir")
    return p


def _run(args, parser):
    from . import CNNClassifier
    from .experiments import run_experiment, summary_table, write_report

    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [n for n in names if n not in STRATEGY_NAMES]
    if unknown or not names:
        parser.error(f"unknown strategy {', '.join(unknown) or '(none)'}; "
                     f"choose from {', '.join(STRATEGY_NAMES)}")
    try:
        alphas = [float(a) for a in args.alpha.split(",")]
    except ValueError:
        parser.error(f"--alpha must be comma-separated numbers, got {args.alpha!r}")
    if any(not 0 <= a <= 1 for a in alphas):
        parser.error("--alpha values must lie in [0, 1]")
    for flag in ("initial", "query_size", "budget", "seeds", "epochs", "n_samples"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")
    if args.budget < args.initial:
        parser.error(f"--budget ({args.budget}) is smaller than --initial ({args.initial})")
    out = Path(args.out or Path("xal_results") / args.data.partition(":")[0])
    dataset, description = _load_data(args.data, args.image_size, args.n_samples, 0)
    strategies = _strategies(names, alphas, args.uncertainty)
    net = CNNClassifier(n_classes=len(dataset.target_names), max_epochs=args.epochs,
                        batch_size=args.batch_size, lr=args.lr)
    print(f"xal run: {description}, {len(dataset.y)} images of "
          f"{'x'.join(map(str, dataset.X.shape[1:]))}; strategies "
          f"{', '.join(strategies)}; {args.seeds} seed(s); "
          f"results in {out}", flush=True)
    results = run_experiment(
        net, dataset, strategies, initial_size=args.initial,
        query_size=args.query_size, budget=args.budget, seeds=range(args.seeds),
        test_size=args.test_size, out_dir=out, n_jobs=args.n_jobs, force=args.force,
        progress=False if args.no_progress else None,
        extra_config={"data": args.data, "description": description,
                      "image_size": list(dataset.X.shape[2:]), "epochs": args.epochs})
    report = write_report(out, dataset)
    for metric in ("accuracy", "attention_dice"):
        print(f"\n{metric} (mean ± std over seeds) by number of labels:")
        print(summary_table(results, metric).to_string())
    print(f"\nReport: {report}")


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            _run(args, parser)
        else:
            from .experiments import write_report

            if not (Path(args.results_dir) / "config.json").is_file():
                parser.error(f"{args.results_dir} is not a results folder (no config.json)")
            print(f"Report: {write_report(args.results_dir, _dataset_for_report(args))}")
    except (ValueError, FileNotFoundError) as exc:
        print(f"xal: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _dataset_for_report(args):
    """Reload the experiment's data for the Grad-CAM grid when the CLI recorded it."""
    import json

    cfg = json.loads((Path(args.results_dir) / "config.json").read_text())
    extra = cfg.get("extra", {})
    if "data" not in extra:
        return None
    size = extra.get("image_size", [None])[0]
    dataset, _ = _load_data(extra["data"], size, cfg["dataset"]["n_samples"], 0)
    return dataset


if __name__ == "__main__":
    sys.exit(main())
