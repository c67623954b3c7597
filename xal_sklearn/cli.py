"""The ``xal`` command: run active-learning experiments and report them."""

import argparse
import json
import math
import signal
import sys
import time
import warnings
from pathlib import Path

# Only torch-free modules at the top: help and argument errors must not wait for torch
# (benchmarks/bench_cli_startup.py); the rest is imported where it is used.
from ._names import (ALIGNMENT_NAMES, BACKEND_TOKEN_ENV, DEFAULT_CONTEXT_CHANNELS,
                     DEFAULT_N_FILTERS, DEFAULT_PRETRAIN_EPOCHS, DEFAULT_RETRAIN_EVERY,
                     DEFAULT_ROI_LOSS, DEFAULT_TOP, HEAD_INITS, PRECISION_NAMES,
                     PRETRAIN_METHODS, RECIPES, RESIZE_MODES, ROI_BALANCES, ROI_CONFLICTS,
                     ROI_DEFAULTS, ROI_LOSSES, UNCERTAINTY_MEASURES, context_split)
from .registry import BALD_DROPOUT, STRATEGY_NAMES, strategy_spec, strategy_words

#: A strategy name ending in this trains with the ROI loss (the other arms without).
ROI_SUFFIX = "+roi"
DEFAULT_STRATEGIES = "random,entropy,dual,random+roi,dual+roi"

DEMO_NOTE = ("The demo trains on synthetic phantoms whose corner marker agrees with the label "
             "90 % of the time (a shortcut a model can learn instead of the lesion) and tests "
             "on phantoms without the marker, so test accuracy rewards looking at the lesion "
             "rather than at the marker.")


def whole_or_share(value):
    """--roi-warmup, --context-channels: a whole number ('5') or a share ('0.5')."""
    number = float(value)
    return int(number) if number.is_integer() and "." not in value else number


def _roi_options(parser):
    """The ROI-loss settings; left out, each is CNNClassifier's default."""
    defaults = ROI_DEFAULTS  # the classifier's
    parser.add_argument("--roi-weight", type=float, default=None,
                        help="weight of --roi-loss (default "
                             f"{defaults['roi_weight']:g}; see --roi-balance)")
    parser.add_argument("--roi-balance", default=None, choices=ROI_BALANCES,
                        help="ce: the attention term is rescaled at every step to "
                             "--roi-weight x the cross-entropy; fixed: --roi-weight x the "
                             f"term, recommended with --pretrain (default "
                             f"{defaults['roi_balance']})")
    parser.add_argument("--roi-dilation", type=int, default=None,
                        help="cells of the attention grid (pixels for counterexample) by "
                             f"which ROIs are grown (default {defaults['roi_dilation']})")
    parser.add_argument("--roi-warmup", type=whole_or_share, default=None,
                        help="epochs of cross-entropy only before the attention loss starts, "
                             "or a share of the epochs such as 0.5 (default "
                             f"{defaults['roi_warmup']:g})")
    parser.add_argument("--roi-conflict", default=None, choices=ROI_CONFLICTS,
                        help="project: the attention gradient loses its part that points "
                             "against the cross-entropy's; separate: projected, and applied "
                             "after the optimizer's step on the cross-entropy alone, scaled "
                             "by its second moment; sum: plain backpropagation of the "
                             f"sum (default {defaults['roi_conflict']})")


def _class_weight_option(parser):
    parser.add_argument("--class-weight", default="none", choices=("none", "balanced"),
                        help="weights of the classes in the cross-entropy: none, or balanced "
                             "(each class by the inverse of its share of the labelled "
                             "images, scikit-learn's meaning)")


def _resize_option(parser):
    parser.add_argument("--resize", default="crop", choices=RESIZE_MODES,
                        help="folder data: how images of another aspect ratio than square "
                             "meet --image-size (masks alike): crop the overhang (chosen on "
                             "validation groups of breast ultrasound), stretch each axis, or "
                             "pad with black")


def _context_option(parser):
    last = DEFAULT_N_FILTERS[-1]
    parser.add_argument("--context-channels", type=whole_or_share, default=None,
                        help=f"channels of the network's last block ({last}) given to a "
                             "context branch that Grad-CAM, the ROI loss and the misalignment "
                             "score do not read: a number ('16') or a share ('0.25'); 0: no "
                             "branch, the network before it existed (default: SmallCNN's, "
                             f"{DEFAULT_CONTEXT_CHANNELS:g} = "
                             f"{context_split(DEFAULT_CONTEXT_CHANNELS, last)})")


def _context_channels(args):
    """--context-channels as a number of channels (left out: SmallCNN's default)."""
    value = DEFAULT_CONTEXT_CHANNELS if args.context_channels is None else args.context_channels
    last = DEFAULT_N_FILTERS[-1]
    try:
        return context_split(value, last)
    except ValueError:
        args.subparser.refuse(
            f"--context-channels must be a number of channels from 0 to {last - 1} (the "
            f"network's last block has {last} and Grad-CAM reads at least one) or a share in "
            f"[0, 1); got {value}")


def _roi_settings(args):
    """The ROI-loss settings given on the command line (the rest stay the defaults)."""
    given = {k: getattr(args, k) for k in ROI_DEFAULTS}
    return {k: v for k, v in given.items() if v is not None}


def _strategies(names, alphas, uncertainty, alignment, roi_params=None):
    """name -> strategy spec for run_experiment, from the registry; ``+roi`` arms carry
    ``roi_params``, and a dual name gives one arm per alpha."""
    out = {}
    for full in names:
        name, roi = full.removesuffix(ROI_SUFFIX), full.endswith(ROI_SUFFIX)
        suffix = ROI_SUFFIX if roi else ""
        for a in (alphas if name.startswith("dual") else alphas[:1]):
            func, kwargs, params = strategy_spec(name, a, uncertainty, alignment)
            params = dict(params, **(roi_params if roi else {}))
            label = f"{name} a={a:g}" if name.startswith("dual") else name
            out[label + suffix] = (func, kwargs, params)
    return out


def _describe(name, arms=True):
    """A strategy's name in words, for the closing sentences; ``arms``: the run has
    ``+roi`` strategies, so a dual one without the suffix is the ablation."""
    roi, base = name.endswith(ROI_SUFFIX), name.removesuffix(ROI_SUFFIX)
    kind, _, setting = base.partition(" ")
    if kind not in STRATEGY_NAMES:
        words = f"`{base}`"
    else:
        words = strategy_words(kind, setting)
    if kind.startswith("dual") and kind in STRATEGY_NAMES:
        if roi:
            return f"the full method ({words} + ROI loss)"
        return f"{words} without the ROI loss" if arms else words
    return f"{words} with the ROI loss" if roi else words


def _load_data(spec, image_size, n_samples, seed, rgb=False, on_error="raise", shortcut=None,
               test_size=0.2, resize="crop"):
    """(dataset, test_set or None, description) for ``--data`` (and ``--shortcut``)."""
    from .datasets import load_brain_tumor_figshare, load_image_folder, make_lesion_phantoms

    kind, _, path = spec.partition(":")
    if kind == "phantoms":
        size = image_size or 32
        # with --shortcut, the injected feature replaces the phantoms' own corner marker
        train = make_lesion_phantoms(n_samples, size, shortcut=0.9 if shortcut is None else 0.0,
                                     random_state=seed)
        test = make_lesion_phantoms(max(n_samples // 2, 30), size, shortcut=0.0,
                                    random_state=seed + 10_000)
        if rgb:
            train.X, test.X = train.X.repeat(3, axis=1), test.X.repeat(3, axis=1)
        if shortcut is not None:
            return _inject(train, test, shortcut, "synthetic phantoms", test_size)
        return train, test, "synthetic phantoms (shortcut 0.9 in the pool, none in the test set)"
    if not path:
        raise ValueError(f"--data {kind} needs a path: {kind}:PATH.")
    if kind == "folder":
        data, description = (load_image_folder(path, image_size=image_size or 128,
                                               as_gray=not rgb, on_error=on_error, n_jobs=-1,
                                               resize=resize),
                             f"folder {path}" + {"crop": " (cropped to square)",
                                                 "pad": " (padded to square)",
                                                 "stretch": ""}[resize])
    elif kind == "brain-tumor-figshare":
        data = load_brain_tumor_figshare(path, image_size=image_size or 128)
        if rgb:
            data.X = data.X.repeat(3, axis=1)
        description = "brain-tumour MRI (figshare, Cheng et al.)"
    else:
        raise ValueError(f"Unknown --data {spec!r}; use phantoms, folder:PATH or "
                         "brain-tumor-figshare:PATH.")
    if shortcut is None:
        return data, None, description
    return _inject(data, None, shortcut, description, test_size)


def _inject(data, test, shortcut, description, test_size):
    from .datasets import shortcut_split

    kind, agree = shortcut
    # the feature must be independent of the label on the test split, so the split is
    # made once (groups, seed 0) and passed on as an explicit test set
    pool, test = shortcut_split(data, kind, agree, test=test, test_size=test_size)
    return pool, test, (f"{description} with a {kind} shortcut that agrees with the label "
                        f"in {agree:.0%} of the pool and is independent of it in the test set")


def _parse_shortcut(value, parser):
    from .datasets import SHORTCUT_KINDS

    kind, sep, agree = value.partition(":")
    try:
        agree = float(agree) if sep else 0.9
    except ValueError:
        parser.refuse(f"--shortcut {value!r}: the agreement after ':' must be a number")
    if kind not in SHORTCUT_KINDS:
        parser.refuse(f"--shortcut {value!r}: unknown kind {kind!r}; choose from "
                      f"{', '.join(SHORTCUT_KINDS)}")
    if not 0 <= agree <= 1:
        parser.refuse(f"--shortcut {value!r}: the agreement must lie in [0, 1]")
    return kind, agree


class _Parser(argparse.ArgumentParser):
    """argparse's parser, with :meth:`refuse` for a wrong value or machine."""

    def refuse(self, message):
        """Exit as :meth:`error` does, but with the message alone: the usage helps with a
        misspelt option, and only buries the line that matters when a value is wrong."""
        self.exit(2, f"{self.prog}: error: {message}\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where there is one to show (not None, not an off switch)."""

    def _get_help_string(self, action):
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def _recipe_option(parser, kind):
    words = "; ".join(f"{name}: " + ", ".join(f"--{k.replace('_', '-')} {v}"
                                               for k, v in recipe[kind].items())
                      for name, recipe in RECIPES.items())
    parser.add_argument("--recipe", default=None, choices=tuple(RECIPES),
                        help=f"a preset of what to run on a new data set ({words}); an "
                             "option given beside it with another value than its default "
                             "wins (docs/results.md, What should I run?)")


def _apply_recipe(args, kind):
    """Fill the options the user left at their defaults from ``--recipe``."""
    for name, value in RECIPES[args.recipe][kind].items():
        if getattr(args, name) == args.subparser.get_default(name):
            setattr(args, name, value)


def _subparser(sub, name, **kwargs):
    # no prefix matching (--seed must not silently mean --seeds); errors show this usage
    parser = sub.add_parser(name, formatter_class=_HelpFormatter, allow_abbrev=False, **kwargs)
    parser.set_defaults(subparser=parser)
    return parser


def _parser():
    from ._version import __version__

    p = _Parser(prog="xal", description="Explainability-guided active learning.",
                allow_abbrev=False)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    run = _subparser(sub, "run", help="simulate active learning; with no options a short demo "
                                      "on synthetic phantoms",
                     description="Simulate pool-based active learning with the known labels "
                                 "as the oracle, then write a report.")
    run.add_argument("--data", default="phantoms",
                     help="phantoms | folder:PATH | brain-tumor-figshare:PATH")
    run.add_argument("--n-samples", type=int, default=400,
                     help="phantoms only: pool size (the test set is half as large)")
    run.add_argument("--shortcut", default=None, metavar="KIND[:AGREE]",
                     help="inject a spurious feature into the pool that agrees with the "
                          "label with probability AGREE (default 0.9) and is independent of "
                          "it on the test split, held fixed (groups, seed 0): marker, "
                          "intensity or border (xal_sklearn.datasets.add_shortcut)")
    run.add_argument("--strategies", default=DEFAULT_STRATEGIES,
                     help=f"comma-separated, of {', '.join(STRATEGY_NAMES)}; a name ending in "
                          f"{ROI_SUFFIX} trains with the ROI loss (--roi-loss, default "
                          f"{DEFAULT_ROI_LOSS}), "
                          "the others without. bald, badge, coreset, typiclust and probcover "
                          "are scikit-activeml's on the network's features (bald trains with "
                          f"dropout {BALD_DROPOUT:g} and draws 20 MC dropout samples); "
                          "dual_kcenter and dual_cluster spread the dual batch over the "
                          "feature space. The default compares the full method "
                          "(dual+roi) with random, entropy and the two ablations")
    _recipe_option(run, "run")
    run.add_argument("--alpha", default="0.3", help="comma-separated alphas for dual")
    run.add_argument("--uncertainty", default="entropy", choices=UNCERTAINTY_MEASURES)
    run.add_argument("--alignment", default="soft_dice", choices=ALIGNMENT_NAMES,
                     help="how dual/misalignment compare Grad-CAM with the ROI")
    run.add_argument("--roi-loss", default=None, choices=ROI_LOSSES,
                     help="the attention loss on the labelled ROIs: of the +roi strategies "
                          f"(default {DEFAULT_ROI_LOSS}), or of every strategy when none ends "
                          "in +roi (default: cross-entropy only)")
    _roi_options(run)
    _context_option(run)
    run.add_argument("--pool-rois", default="given", choices=("given", "predicted", "none"),
                     help="where the strategies' ROIs of unlabelled pool images come from: "
                          "given: the data set's expert masks (an oracle: in a real campaign "
                          "nobody has drawn them); predicted: an ROI model (ROIPredictor) "
                          "trained each round on the labelled images' ROIs only; none: no "
                          "pool ROIs (dual falls back to uncertainty)")
    run.add_argument("--reference", default="random",
                     help="strategy the others are compared with in the report")
    run.add_argument("--pretrain", default=None, choices=PRETRAIN_METHODS,
                     help="self-supervised warm start: pretrain the network on each seed's "
                          "pool images (never the test split, no labels) and start every fit "
                          "from it (xal_sklearn.pretrain_encoder)")
    run.add_argument("--pretrain-epochs", type=int, default=DEFAULT_PRETRAIN_EPOCHS,
                     help="epochs of --pretrain")
    run.add_argument("--head-init", default=None, choices=HEAD_INITS,
                     help="how each fit starts the network's last layer: probe fits a "
                          "logistic regression on the (pretrained) features first, random "
                          "is PyTorch's (default: probe with --pretrain, else random)")
    run.add_argument("--initial", type=int, default=30, help="initial labelled samples")
    # the demo's: three rounds of 30 fit 90 s on 2 loaded cores (docs/benchmarks.md)
    run.add_argument("--query-size", type=int, default=30, help="labels per round")
    run.add_argument("--budget", type=int, default=90, help="labels in total")
    run.add_argument("--seeds", type=int, default=5,
                     help="number of seeds (0, 1, ...); 5 is the fewest that give a "
                          "verdict")
    run.add_argument("--test-size", type=float, default=0.2, help="fraction of groups")
    run.add_argument("--image-size", type=int, default=None,
                     help="side in pixels; default 32 for phantoms, 128 otherwise")
    run.add_argument("--epochs", type=int, default=30,
                     help="training epochs each time the network is fitted")
    run.add_argument("--batch-size", type=int, default=32, help="training mini-batch size")
    run.add_argument("--lr", type=float, default=1e-3,
                     help="Adam's learning rate (cosine-annealed to 0 over --epochs)")
    run.add_argument("--n-jobs", type=int, default=None,
                     help="runs (strategy x seed) at once; -1: one per core, each on one "
                          "torch thread when there are at least as many runs as cores "
                          "(default: -1 on the CPU, 1 on a GPU, where every run would "
                          "hold a CUDA context of its own)")
    run.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"),
                     help="where the networks train and score; auto: the GPU when there is "
                          "one")
    run.add_argument("--precision", default="float32", choices=PRECISION_NAMES,
                     help="training arithmetic; bf16-mixed trains about 1.2x faster than "
                          "float32 on CPUs with AVX512-BF16 or AMX (docs/benchmarks.md)")
    run.add_argument("--rgb", action="store_true",
                     help="keep 3 colour channels instead of converting to grayscale")
    run.add_argument("--on-error", default="raise", choices=("raise", "skip"),
                     help="folder data: stop at a bad manifest row, or skip it with a warning")
    _resize_option(run)
    _class_weight_option(run)
    run.add_argument("--metric", default="accuracy", choices=("accuracy", "balanced_accuracy"),
                     help="the headline metric of the closing sentences and the verdicts; "
                          "when the test split's classes are of unequal size the other is "
                          "said beside it")
    run.add_argument("--out", default=None,
                     help="results folder (default: xal_results/<kind of data>)")
    run.add_argument("--force", action="store_true",
                     help="discard a results folder of another configuration")
    run.add_argument("--no-progress", action="store_true",
                     help="no progress bars, and no per-round lines when output is not a "
                          "terminal")
    rep = _subparser(sub, "report", help="write report.md and PNGs for a results folder")
    rep.add_argument("results_dir")
    camp = _subparser(sub, "campaign", help="a real labelling loop with an expert "
                                            "(Label Studio or a CSV)")
    csub = camp.add_subparsers(dest="action", required=True)
    init = _subparser(csub, "init", help="start a campaign over a folder of images")
    init.add_argument("folder", help="the campaign folder to create")
    init.add_argument("--images", required=True, help="folder of the pool's images")
    init.add_argument("--manifest",
                      help="CSV with an image column (paths relative to --images), optional "
                           "mask (several files separated by ';') and id (your name for the "
                           "image, shown to the annotator); default: every image file under "
                           "--images")
    init.add_argument("--classes", required=True, help="comma-separated class names")
    init.add_argument("--image-size", type=int, default=128, help="side the model sees, pixels")
    init.add_argument("--rgb", action="store_true",
                      help="keep 3 colour channels instead of converting to grayscale")
    init.add_argument("--roi-loss", default=DEFAULT_ROI_LOSS, choices=(*ROI_LOSSES, "none"),
                      help="the attention loss on the expert's ROIs that training adds to the "
                           "cross-entropy; it moves Grad-CAM onto the ROIs, at about a point "
                           "of accuracy on brain MRI and three on breast ultrasound from "
                           "scratch, none from a warm start (docs/results.md); none: "
                           "cross-entropy only")
    _roi_options(init)
    _class_weight_option(init)
    init.add_argument("--strategy", default="dual", choices=STRATEGY_NAMES,
                      help="query strategy, from the same registry as xal run --strategies; "
                           "dual, dual_kcenter, dual_cluster and misalignment train an ROI "
                           "model on the expert's ROIs and compare Grad-CAM with the ROIs it "
                           "draws on the pool (before any ROI is drawn: uncertainty)")
    _recipe_option(init, "campaign")
    init.add_argument("--roi-threshold", type=float, default=None,
                      help="probability at which the ROI model marks a pixel as ROI "
                           "(default: ROIPredictor's, 0.4)")
    init.add_argument("--alpha", type=float, default=0.3,
                      help="weight of uncertainty in dual-criterion sampling")
    init.add_argument("--epochs", type=int, default=20,
                      help="training epochs each time the network is fitted")
    init.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"),
                      help="where the network trains and scores")
    init.add_argument("--precision", default="float32", choices=PRECISION_NAMES,
                      help="training arithmetic")
    init.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    init.add_argument("--module", default=None,
                      help="a torchvision backbone (resnet18, resnet50, densenet121, "
                           "efficientnet_b0) instead of the small CNN; needs the backbones extra")
    init.add_argument("--module-weights", default=None,
                      help="local ImageNet state dict for --module (never downloaded)")
    _context_option(init)
    init.add_argument("--url-prefix", default="/data/local-files/?d=",
                      help="prefix of image URLs in tasks.json")
    init.add_argument("--document-root", default="/",
                      help="image URLs are paths relative to this folder")
    q = _subparser(csub, "query", help="write the next batch for the expert")
    q.add_argument("folder")
    q.add_argument("-n", type=int, default=20, help="images in the batch")
    q.add_argument("--allow-repeat", action="store_true",
                   help="may hand out images of a batch still waiting for labels")
    q.add_argument("--scheduler", default=None,
                   help="score the pool on this Dask scheduler's cluster (e.g. "
                        "tcp://10.0.0.5:8786; needs the dask extra)")
    imp = _subparser(csub, "import", help="import a Label Studio JSON export or a filled CSV")
    imp.add_argument("folder")
    imp.add_argument("source", help="Label Studio JSON export or filled to_label.csv")
    pre = _subparser(csub, "pretrain", help="pretrain the network on the whole pool without "
                                            "labels; later rounds start from it")
    pre.add_argument("folder")
    pre.add_argument("--method", default="simclr", choices=PRETRAIN_METHODS,
                     help="self-supervised method (xal_sklearn.pretrain_encoder)")
    pre.add_argument("--epochs", type=int, default=DEFAULT_PRETRAIN_EPOCHS,
                     help="passes over the pool")
    pre.add_argument("--batch-size", type=int, default=256, help="images per step")
    st = _subparser(csub, "status", help="labelled per class, rounds, pending batch, estimate")
    st.add_argument("folder")
    srv = _subparser(csub, "serve", help="the campaign as a Label Studio ML backend: "
                                         "predictions ordered by the strategy, retraining "
                                         "as the expert labels")
    srv.add_argument("folder")
    srv.add_argument("--host", default="127.0.0.1",
                     help="address to listen on; anything but the loopback needs a token")
    srv.add_argument("--port", type=int, default=9090)
    srv.add_argument("--token", default=None,
                     help=f"every request must carry it (default: ${BACKEND_TOKEN_ENV}, if set)")
    srv.add_argument("--retrain-every", type=int, default=DEFAULT_RETRAIN_EVERY,
                     help="retrain after this many new, changed or deleted labels")
    srv.add_argument("--top", type=int, default=DEFAULT_TOP,
                     help="images the strategy itself orders; the rest follow by uncertainty")
    con = _subparser(csub, "connect", help="create or reuse the Label Studio project, its "
                                           "tasks, the ML backend and the webhook")
    con.add_argument("folder")
    con.add_argument("--label-studio", required=True, help="Label Studio's URL")
    con.add_argument("--api-key", default=None,
                     help="a personal access token of a Label Studio account (default: "
                          "$LABEL_STUDIO_API_KEY)")
    con.add_argument("--backend", default="http://localhost:9090",
                     help="where Label Studio reaches xal campaign serve")
    con.add_argument("--token", default=None,
                     help=f"the backend's token, if it has one (default: ${BACKEND_TOKEN_ENV})")
    con.add_argument("--title", default=None,
                     help='project title (default: "xal campaign FOLDER-NAME")')
    rt = _subparser(csub, "retrain", help="train now on the labels that came from Label Studio")
    rt.add_argument("folder")
    return p


def _check_device(args):
    from ._validation import device_problem

    problem = device_problem(args.device)
    if problem is not None:
        args.subparser.refuse(f"--device {args.device}: {problem}; use --device cpu, or "
                              "--device auto (the GPU when there is one, else the CPU)")


def _campaign(args):
    from .campaign import Campaign

    if args.action == "init":
        _check_device(args)
        c = Campaign.create(args.folder, args.images, args.classes.split(","),
                            manifest=args.manifest, image_size=args.image_size, rgb=args.rgb,
                            roi_loss=None if args.roi_loss == "none" else args.roi_loss,
                            **_roi_settings(args),
                            alpha=args.alpha, epochs=args.epochs, device=args.device,
                            precision=args.precision, random_state=args.seed,
                            module=args.module, module_weights=args.module_weights,
                            context_channels=(None if args.context_channels is None
                                              else _context_channels(args)),
                            url_prefix=args.url_prefix, document_root=args.document_root,
                            strategy=args.strategy, roi_threshold=args.roi_threshold,
                            class_weight=None if args.class_weight == "none"
                            else args.class_weight)
        print(f"Campaign created in {args.folder}: {len(c.pool['images'])} pool images, "
              f"classes {', '.join(c.classes)}.")
        if args.recipe:
            print(f"The {args.recipe} recipe starts from a warm start: run `xal campaign "
                  f"pretrain {args.folder}` before the first labels are imported (it "
                  "learns from the pool's images alone).")
    elif args.action == "query":
        from contextlib import nullcontext

        c = Campaign.open(args.folder)
        if args.scheduler:
            from .scoring_dask import scoring_on

            cluster = scoring_on(args.scheduler)  # refused before any work if it is silent
        with cluster if args.scheduler else nullcontext():
            r = c.query(args.n, allow_repeat=args.allow_repeat)
        print(f"Batch {r['batch']:03d}: {len(r['ids'])} of {r['n_pool']} available images, "
              f"chosen by {r['method']}.\nFolder: {r['folder']}\n  import tasks.json into a "
              "Label Studio project configured with label_config.xml, or fill to_label.csv;"
              f"\n  then: xal campaign import {args.folder} EXPORT.json|to_label.csv")
        for note in r["notes"]:
            print(f"Note: {note}")
    elif args.action == "pretrain":
        if args.epochs < 1 or args.batch_size < 2:
            args.subparser.refuse("--epochs must be >= 1 and --batch-size >= 2")
        r = Campaign.open(args.folder).pretrain(args.method, args.epochs, args.batch_size)
        info = r["info"]
        print(f"Pretrained ({info['method']}, {info['epochs']} epochs on {info['n_images']} pool "
              f"images, no labels) in {info['seconds']:.0f} s: {r['path']}. The next import "
              "retrains from it.")
    elif args.action in ("serve", "connect", "retrain"):
        return _live_campaign(args)
    elif args.action == "import":
        c = Campaign.open(args.folder)
        r = c.import_labels(args.source)
        agreement = ("" if r["agreement"] is None else
                     f" The model had predicted {r['agreement']:.0%} of these labels.")
        batches = ", ".join(f"{b:03d}" for b in r["batches"])
        manifest = (f", {r['n_roi_from_manifest']} of them from the manifest"
                    if r["n_roi_from_manifest"] else "")
        print(f"Imported {r['n_imported']} labels of batch {batches} ({r['n_with_roi']} with "
              f"an ROI{manifest}) and retrained.{agreement}"
              + (f" {len(r['released'])} unlabelled image(s) of the batch went back to the "
                 "pool." if r["released"] else "")
              + (f" {r['n_skipped']} task(s) of batches imported before were skipped (their "
                 "labels are unchanged)." if r["n_skipped"] else ""))
    print(Campaign.open(args.folder).summary())


def _live_campaign(args):
    """serve, connect and retrain: the campaign as Label Studio's ML backend."""
    import os

    from .campaign import VERSION_PREFIX, Campaign, connect, read_connection, serve

    if args.action == "retrain":
        r = Campaign.open(args.folder).retrain()
        print("No label waits for training." if r is None else
              f"Trained round {r['round']} on {r['n_labelled']} labels ({r['n_changes']} new "
              "or changed from Label Studio).")
        print(Campaign.open(args.folder).summary())
        return
    token = args.token or os.environ.get(BACKEND_TOKEN_ENV) or None
    if args.action == "connect":
        key = args.api_key or os.environ.get("LABEL_STUDIO_API_KEY")
        if not key:
            args.subparser.refuse("--api-key (or $LABEL_STUDIO_API_KEY) is needed: a personal "
                                  "access token from Label Studio's Account & Settings")
        r = connect(Campaign.open(args.folder), args.label_studio, key, args.backend,
                    token=token, title=args.title)
        print(f"Label Studio project {r['project']} ({r['title']!r}), {r['n_tasks']} tasks, "
              f"predictions of {r['model_version']}: "
              + ("; ".join(r["actions"]) if r["actions"] else "everything was in place")
              + f".\nOpen {args.label_studio.rstrip('/')}/projects/{r['project']}/data and "
              "press Label All Tasks: the task the strategy wants most comes first "
              "(or sort the Data Manager by Prediction score, ascending).")
        return
    if args.retrain_every < 1 or args.top < 1:
        args.subparser.refuse("--retrain-every and --top must be >= 1")
    refresh = None
    key = os.environ.get("LABEL_STUDIO_API_KEY")
    if key:
        def refresh(version, predict):
            from .labelstudio import LabelStudioClient

            known = read_connection(args.folder)
            if known is None:
                return None
            return LabelStudioClient(known["url"], token=key).push_predictions(
                known["project"], version, predict, replaces=VERSION_PREFIX)
    else:
        print("xal: note: without $LABEL_STUDIO_API_KEY the backend cannot give Label Studio "
              "a new model's predictions; xal campaign connect gives them (or the Data "
              "Manager's Actions > Retrieve Predictions).", file=sys.stderr)
    try:
        serve(args.folder, host=args.host, port=args.port, token=token,
              retrain_every=args.retrain_every, top=args.top, label_studio=refresh)
    except KeyboardInterrupt:  # Ctrl-C or kill: every label is in the journal or the state
        print("xal: the backend stopped. Labels not trained in yet wait in the journal; "
              "serve again, or xal campaign retrain.", file=sys.stderr)


def _check_run_args(args):
    """Every argument is checked before anything is loaded or written (those that need
    torch last, so that a mistyped number is said at once)."""
    parser = args.subparser
    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [n for n in names if n.removesuffix(ROI_SUFFIX) not in STRATEGY_NAMES]
    if unknown or not names:
        parser.refuse(f"unknown strategy {', '.join(unknown) or '(none)'}; "
                      f"choose from {', '.join(STRATEGY_NAMES)} (each may end in {ROI_SUFFIX})")
    try:
        alphas = [float(a) for a in args.alpha.split(",")]
    except ValueError:
        parser.refuse(f"--alpha must be comma-separated numbers, got {args.alpha!r}")
    if any(not 0 <= a <= 1 for a in alphas):
        parser.refuse("--alpha values must lie in [0, 1]")
    if args.shortcut is not None:
        args.shortcut = _parse_shortcut(args.shortcut, parser)
    for flag in ("initial", "query_size", "budget", "seeds", "epochs", "n_samples",
                 "batch_size", "pretrain_epochs"):
        if getattr(args, flag) < 1:
            parser.refuse(f"--{flag.replace('_', '-')} must be >= 1")
    if args.image_size is not None and args.image_size < 8:
        parser.refuse("--image-size must be >= 8")
    args.context_channels = _context_channels(args)
    if not (math.isfinite(args.lr) and args.lr > 0):
        parser.refuse(f"--lr must be a positive number, got {args.lr}")
    if args.n_jobs is not None and (args.n_jobs == 0 or args.n_jobs < -1):
        parser.refuse("--n-jobs must be >= 1, or -1 for all cores")
    if not 0 < args.test_size < 1:
        parser.refuse("--test-size must lie in (0, 1)")
    if args.budget < args.initial:
        parser.refuse(f"--budget ({args.budget}) is smaller than --initial ({args.initial})")
    out = Path(args.out or Path("xal_results") / args.data.partition(":")[0])
    if out.exists() and not out.is_dir():
        parser.refuse(f"--out {out} is a file, not a folder")
    from ._validation import resolve_device
    from .roi_loss import resolve_roi_settings

    try:  # the classifier's own checks, in the CLI's words
        resolve_roi_settings(args.roi_loss, **_roi_settings(args))
    except ValueError as e:
        words = str(e).replace("max_epochs", "--epochs")
        for name in ROI_DEFAULTS:
            words = words.replace(name, "--" + name.replace("_", "-"))
        parser.refuse(words)
    _check_device(args)
    if args.n_jobs is None:
        args.n_jobs = -1 if resolve_device(args.device) == "cpu" else 1
    return names, alphas, out


def _run(args):
    parser = args.subparser
    names, alphas, out = _check_run_args(args)
    from . import CNNClassifier
    from .experiments import (ResultsFolderError, degenerate_runs, run_experiment,
                              summary_table, write_report)
    from .roi_loss import describe_roi_training

    dataset, test_set, description = _load_data(args.data, args.image_size, args.n_samples, 0,
                                                rgb=args.rgb, on_error=args.on_error,
                                                shortcut=args.shortcut,
                                                test_size=args.test_size, resize=args.resize)
    arms = any(n.endswith(ROI_SUFFIX) for n in names)  # ROI loss per strategy, not for all
    settings = _roi_settings(args)
    roi_params = {"roi_loss": args.roi_loss or DEFAULT_ROI_LOSS, **settings}
    strategies = _strategies(names, alphas, args.uncertainty, args.alignment, roi_params)
    reference = args.reference if args.reference in strategies else None
    if args.reference != "random" and reference is None:
        parser.refuse(f"--reference {args.reference!r} is not among the strategies run: "
                      f"{', '.join(strategies)}")
    net = CNNClassifier(n_classes=len(dataset.target_names), max_epochs=args.epochs,
                        batch_size=args.batch_size, lr=args.lr,
                        roi_loss=None if arms else args.roi_loss, **settings,
                        device=args.device,
                        precision=args.precision,
                        head_init=args.head_init or ("probe" if args.pretrain else "random"),
                        module__context_channels=args.context_channels,
                        class_weight=None if args.class_weight == "none" else args.class_weight)
    note = None
    if args.shortcut:
        note = (f"The pool carries a spurious feature: {dataset.shortcut.description}; it "
                f"agrees with the label in {args.shortcut[1]:.0%} of the pool and is "
                "independent of it in the test set, so test accuracy rewards models that "
                "learn the lesion rather than the feature.")
    elif args.data == "phantoms":
        note = DEMO_NOTE
    print(f"xal run: {description}, {len(dataset.y)} images of "
          f"{'x'.join(map(str, dataset.X.shape[1:]))}; strategies "
          f"{', '.join(strategies)}; {args.seeds} seed(s); training with "
          + (f"cross-entropy, + {describe_roi_training(dict(net.get_params(), **roi_params))}"
             f" for the {ROI_SUFFIX} strategies" if arms else
             describe_roi_training(net.get_params()) if args.roi_loss else
             "cross-entropy only")
          + f" in {args.precision}"
          + (f", a SmallCNN with a {args.context_channels}-channel context branch"
             if args.context_channels else ", a SmallCNN without a context branch")
          + (f", from a {args.pretrain} warm start ({args.pretrain_epochs} epochs per seed)"
             if args.pretrain else "")
          + (", each head started from a linear probe" if net.head_init == "probe" else "")
          + {"given": "; pool ROIs: the data set's expert masks (an oracle)",
             "predicted": "; pool ROIs: drawn by an ROI model trained on the labelled ROIs",
             "none": "; pool ROIs: none"}[args.pool_rois]
          + f"; results in {out}", flush=True)
    if note:
        print(note, flush=True)
    try:
        results = run_experiment(
            net, dataset, strategies, initial_size=args.initial,
            query_size=args.query_size, budget=args.budget, seeds=range(args.seeds),
            test_size=args.test_size, out_dir=out, n_jobs=args.n_jobs, force=args.force,
            progress=False if args.no_progress else None, test_set=test_set,
            pretrain=({"method": args.pretrain, "epochs": args.pretrain_epochs}
                      if args.pretrain else None),
            pool_rois=args.pool_rois,
            extra_config={"data": args.data, "description": description, "note": note,
                          "image_size": list(dataset.X.shape[2:]), "epochs": args.epochs,
                          "rgb": args.rgb, "shortcut": args.shortcut,
                          "test_size": args.test_size,
                          # folder data only; stretch, the old way, is left unrecorded
                          # so that folders written before resume
                          **({"resize": args.resize} if args.data.startswith("folder:")
                             and args.resize != "stretch" else {}),
                          **({"metric": args.metric} if args.metric != "accuracy" else {})})
    except ResultsFolderError as exc:
        why = f" ({exc.detail})" if exc.detail else ""
        parser.refuse(f"--out {exc.out_dir} holds results of another configuration{why}; "
                      "choose another --out, or add --force to discard them and start over")
    sentences = _in_words(results, json.loads((out / "config.json").read_text()), reference,
                          args.metric)
    report = write_report(out, dataset, reference=reference or "random", test_set=test_set,
                          in_words=sentences, headline=args.metric)
    for metric in ("accuracy", "attention_roi_auc"):
        print(f"\n{metric} (mean ± std over seeds) by number of labels:")
        print(summary_table(results, metric).to_string())
    print(f"\nChance level of attention_roi_auc: 0.5 (random maps: "
          f"{results['chance_roi_auc'].mean():.3f}).")
    print(f"\nIn words (test {args.metric.replace('_', ' ')} at the final budget, paired by "
          "seed):")
    for sentence in sentences:
        print(f"  {sentence}")
    if len(strategies) == 1:
        print(f"\nOnly one strategy ran ({next(iter(strategies))}), so there is nothing to "
              "compare it with; add others with --strategies (for example random,entropy,dual).")
    notes = degenerate_runs(results)
    if notes:
        print("\nWhat to keep in mind when reading these numbers:")
        for note in notes:
            print(f"  {note}")
    print(f"\nReport: {report}")
    from . import IMPORT_STARTED

    print(f"Finished in {_duration(time.monotonic() - IMPORT_STARTED)} (start-up included).")


def _in_words(results, config, reference=None, metric="accuracy"):
    """The report's sentences: the bottom line, the full method against every other arm
    (else each arm against ``reference`` or the first), attention, balance, no-ROI; the
    comparisons in ``metric``."""
    from .experiments import comparison_sentences, plain_sentences

    strategies = list(config["strategies"])
    arms = any(n.endswith(ROI_SUFFIX) for n in strategies)
    comparisons, names = [], {n: _describe(n, arms) for n in strategies}
    if len(strategies) > 1:
        full = next((n for n in strategies if n.startswith("dual") and n.endswith(ROI_SUFFIX)),
                    None)
        if full is not None:  # the full method against every other arm
            pairs = [(full, n) for n in strategies if n != full]
        else:
            ref = reference if reference in strategies else strategies[0]
            pairs = [(n, ref) for n in strategies if n != ref]
        comparisons = comparison_sentences(results, pairs, metric=metric, names=names)
    return plain_sentences(results, config, comparisons, names, metric=metric)


def _duration(seconds):
    """'42 s' or '8 min 24 s'."""
    seconds = round(seconds)
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60} s"


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """A warning as a line of the command's output, not a source location."""
    print(f"xal: warning: {message}", file=sys.stderr if file is None else file, flush=True)


def main(argv=None):
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said with the usage of the subcommand they were given to
        getattr(args, "subparser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    # SIGTERM (kill, a scheduler's time limit) stops a run as safely as Ctrl-C
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    shown, warnings.showwarning = warnings.showwarning, _show_warning
    if getattr(args, "recipe", None):
        _apply_recipe(args, "run" if args.command == "run" else "campaign")
    try:
        if args.command == "run":
            _run(args)
        elif args.command == "campaign":
            _campaign(args)
        else:
            from .experiments import load_results, write_report

            if not (Path(args.results_dir) / "config.json").is_file():
                args.subparser.refuse(f"{args.results_dir} is not a results folder "
                                      "(no config.json)")
            dataset, test_set = _data_for_report(args)
            config = json.loads((Path(args.results_dir) / "config.json").read_text())
            metric = config.get("extra", {}).get("metric", "accuracy")
            words = _in_words(load_results(args.results_dir), config, metric=metric)
            report = write_report(args.results_dir, dataset, test_set=test_set, in_words=words,
                                  headline=metric)
            print(f"Report: {report}")
    except (ValueError, FileNotFoundError) as exc:
        print(f"xal: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xal: interrupted. Every finished round is kept in the results folder and the "
              "interrupted one is discarded; run the same command again to resume.",
              file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        warnings.showwarning = shown
    return 0


def _data_for_report(args):
    """The experiment's data and explicit test set (or None) for the Grad-CAM grid, when the
    CLI recorded where they came from; else (None, None)."""
    cfg = json.loads((Path(args.results_dir) / "config.json").read_text())
    extra = cfg.get("extra", {})
    if "data" not in extra:
        return None, None
    size = extra.get("image_size", [None])[0]
    shortcut = extra.get("shortcut")
    dataset, test_set, _ = _load_data(extra["data"], size, cfg["dataset"]["n_samples"], 0,
                                      rgb=extra.get("rgb", False),
                                      shortcut=tuple(shortcut) if shortcut else None,
                                      test_size=extra.get("test_size", 0.2),
                                      resize=extra.get("resize", "stretch"))
    return dataset, test_set


if __name__ == "__main__":
    sys.exit(main())
