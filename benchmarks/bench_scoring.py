"""Benchmark pool scoring: fused score_pool against its baselines and peers.

Quoted by docs/benchmarks.md ("Pool scoring speed and memory") and README.md.

Prints, for one model and one pool (same batch size everywhere):

* (a) ``predict_proba``                         -- the floor: one forward pass
* (b) ``score_pool``                            -- probabilities + uncertainty + Grad-CAM
                                                   of the predicted class + Dice, fused
* two-pass: ``predict_proba`` + ``gradcam`` + ``soft_dice`` (two forward passes)
* per-image loop with hooks, one image at a time (what reference scripts do)
* pytorch-grad-cam's batched ``GradCAM`` (PyPI ``grad-cam``), maps only, if importable

with the median time over ``--repeats`` (methods interleaved, so drift hits all alike),
images/s and the ratios; then ``score_pool`` with 1 and 2 torch threads, and the peak
RSS of scoring pools of ``--memory-sizes`` images in fresh processes.

    python benchmarks/bench_scoring.py                       # defaults: 2048 x 1x128x128
    python benchmarks/bench_scoring.py --n-images 256 --repeats 1 --memory-sizes 200 2000
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from xal_sklearn import CNNClassifier, gradcam, normalized_uncertainty, score_pool, soft_dice
from xal_sklearn._validation import resolve_layer


def make_pool(n, size, seed=0, chunk=256):
    """Random images and disc-shaped ROIs, built in chunks so that building the pool
    leaves no temporary peak behind (the memory check measures scoring alone)."""
    rng = np.random.RandomState(seed)
    X = np.empty((n, 1, size, size), dtype=np.float32)
    M = np.empty((n, size, size), dtype=bool)
    yy, xx = np.mgrid[:size, :size]
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        X[start:stop] = rng.rand(stop - start, 1, size, size)
        c = rng.randint(size // 4, 3 * size // 4, (stop - start, 2))
        M[start:stop] = ((yy[None] - c[:, :1, None]) ** 2 + (xx[None] - c[:, 1:, None]) ** 2
                         < (size // 8) ** 2)
    return X, M


def current_rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_net(args):
    return CNNClassifier(n_classes=args.n_classes, batch_size=args.batch_size, device=args.device,
                         random_state=0).initialize()


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def two_pass(net, X, M):
    proba = net.predict_proba(X)
    u = normalized_uncertainty(proba)
    return proba, u, 1 - soft_dice(gradcam(net, X), M)


def per_image_loop(net, X, M):
    """One image at a time with module hooks and a full ``backward()``, as reference
    Grad-CAM scripts do; the same ReLU, bilinear upsampling, scaling and Dice."""
    module, layer = net.module_, resolve_layer(net.module_, None)
    module.eval()
    store = {}
    hooks = [layer.register_forward_hook(lambda m, i, o: store.update(act=o.detach())),
             layer.register_full_backward_hook(lambda m, gi, go: store.update(grad=go[0]))]
    out = []
    try:
        for img, mask in zip(X, M):
            module.zero_grad()
            logits = module(torch.from_numpy(img[None]).to(net.device))
            logits[0, logits.argmax()].backward()
            act, grad = store["act"], store["grad"]
            cam = F.relu((grad.mean((2, 3), keepdim=True) * act).sum(1, keepdim=True))
            cam = F.interpolate(cam, size=img.shape[1:], mode="bilinear")[0, 0]
            cam = (cam / cam.max() if cam.max() > 0 else cam).cpu().numpy()
            proba = torch.softmax(logits.detach(), 1).cpu().numpy()
            out.append((proba, soft_dice(cam[None], mask[None])[0]))
    finally:
        for h in hooks:
            h.remove()
        module.zero_grad(set_to_none=True)
    return out


def pytorch_grad_cam_factory(net):
    try:
        from pytorch_grad_cam import GradCAM
    except Exception as exc:  # not installed, or its torchvision import fails
        return None, f"{type(exc).__name__}: {exc}"
    layer = resolve_layer(net.module_, None)

    def run(X, batch_size):
        net.module_.eval()
        maps = []
        with GradCAM(model=net.module_, target_layers=[layer]) as cam:
            cam.batch_size = batch_size
            for start in range(0, len(X), batch_size):
                x = torch.from_numpy(X[start:start + batch_size]).to(net.device)
                maps.append(cam(input_tensor=x, targets=None))
        net.module_.zero_grad(set_to_none=True)
        return np.concatenate(maps)

    return run, None


def timed(fn, device):
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def memory_child(args):
    """Run in a fresh process: build a pool of args.memory_child images, score it."""
    n = args.memory_child
    X, M = make_pool(n, args.image_size)
    net = make_net(args)
    base = current_rss_mb()
    score_pool(net, X, M, batch_size=args.batch_size, return_maps=args.return_maps, progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # lifetime peak
    print(json.dumps({"n": n, "pool_mb": (X.nbytes + M.nbytes) / 2**20, "rss_before_mb": base,
                      "peak_mb": peak, "return_maps": args.return_maps}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-images", type=int, default=2048)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--n-classes", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--per-image-subset", type=int, default=256,
                   help="images timed for the per-image loop (it is slow); rates are per image")
    p.add_argument("--memory-sizes", type=int, nargs="*", default=[2000, 20000])
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--return-maps", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        return memory_child(args)

    X, M = make_pool(args.n_images, args.image_size)
    net = make_net(args)
    sub = slice(0, min(args.per_image_subset, args.n_images))
    pgc, pgc_error = pytorch_grad_cam_factory(net)
    methods = {
        "(a) predict_proba": (lambda: net.predict_proba(X), args.n_images),
        "(b) score_pool (fused)": (lambda: score_pool(net, X, M, progress=False), args.n_images),
        "two-pass (proba + gradcam + dice)": (lambda: two_pass(net, X, M), args.n_images),
        "per-image loop (hooks)": (lambda: per_image_loop(net, X[sub], M[sub]),
                                   sub.stop - sub.start),
    }
    if pgc is not None:
        methods["pytorch-grad-cam GradCAM (maps only)"] = (
            lambda: pgc(X, args.batch_size), args.n_images)
    times = {name: [] for name in methods}
    for name, (fn, _) in methods.items():  # warm-up
        if name.startswith("per-image"):
            per_image_loop(net, X[:4], M[:4])
        elif name.startswith("pytorch-grad-cam"):
            pgc(X[:args.batch_size], args.batch_size)
        else:
            score_pool(net, X[:args.batch_size], M[:args.batch_size], progress=False)
    for _ in range(args.repeats):
        for name, (fn, _) in methods.items():
            times[name].append(timed(fn, args.device))

    rate = {name: methods[name][1] / statistics.median(t) for name, t in times.items()}
    fused = rate["(b) score_pool (fused)"]
    print(f"\nPool scoring: {args.n_images} images of 1x{args.image_size}x{args.image_size}, "
          f"{args.n_classes} classes, batch {args.batch_size}, device {args.device}, "
          f"torch threads {torch.get_num_threads()}, repeats {args.repeats}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}"
          + (f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else ""))
    print(f"{'method':40s} {'median s':>9s} {'images/s':>9s} {'fused speed-up':>15s}")
    for name, t in times.items():
        n = methods[name][1]
        note = f" ({n} images)" if n != args.n_images else ""
        print(f"{name:40s} {statistics.median(t):9.3f} {rate[name]:9.1f} "
              f"{fused / rate[name]:14.2f}x{note}")
    ratio_ba = rate["(a) predict_proba"] / fused
    print(f"\n(b)/(a) score_pool / predict_proba time ratio: {ratio_ba:.3f}  (goal <= 1.3)")
    print(f"per-image loop / score_pool time per image:    "
          f"{fused / rate['per-image loop (hooks)']:.2f}x  (goal >= 3)")
    if pgc is not None:
        print(f"pytorch-grad-cam / score_pool time per image:  "
              f"{fused / rate['pytorch-grad-cam GradCAM (maps only)']:.2f}x  (goal >= 2)")
    else:
        print(f"pytorch-grad-cam not benchmarked: {pgc_error}")

    ref = two_pass(net, X[:256], M[:256])
    s = score_pool(net, X[:256], M[:256], progress=False)
    diff = max(np.abs(s.proba - ref[0]).max(), np.abs(s.uncertainty - ref[1]).max(),
               np.nanmax(np.abs(s.misalignment - ref[2])))
    print(f"max |fused - two-pass| over 256 images: {diff:.2e}  (goal <= 1e-5)")

    threads = {}
    n_thr = min(args.n_images, 512)
    for k in (1, 2):
        torch.set_num_threads(k)
        t = [timed(lambda: score_pool(net, X[:n_thr], M[:n_thr], progress=False), args.device)
             for _ in range(max(1, args.repeats))]
        threads[k] = n_thr / statistics.median(t)
    torch.set_num_threads(args.threads or os.cpu_count())
    print(f"\nscore_pool on {n_thr} images: 1 thread {threads[1]:.1f} images/s, 2 threads "
          f"{threads[2]:.1f} images/s ({threads[2] / threads[1]:.2f}x)")

    memory = []
    for n in args.memory_sizes:
        for maps in ([False, True] if n == min(args.memory_sizes) else [False]):
            cmd = [sys.executable, __file__, "--memory-child", str(n), "--image-size",
                   str(args.image_size), "--batch-size", str(args.batch_size), "--device",
                   args.device, "--n-classes", str(args.n_classes)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            out = subprocess.run(cmd + (["--return-maps"] if maps else []), check=True,
                                 capture_output=True, text=True).stdout
            memory.append(json.loads(out.strip().splitlines()[-1]))
    if memory:
        print(f"\n{'pool images':>11s} {'return_maps':>11s} {'pool MB':>9s} {'RSS before':>11s} "
              f"{'peak RSS MB':>12s} {'scoring adds':>13s}")
        for m in memory:
            print(f"{m['n']:11d} {str(m['return_maps']):>11s} {m['pool_mb']:9.0f} "
                  f"{m['rss_before_mb']:11.0f} {m['peak_mb']:12.0f} "
                  f"{m['peak_mb'] - m['rss_before_mb']:13.0f}")
        plain = [m for m in memory if not m["return_maps"]]
        if len(plain) >= 2:
            lo, hi = plain[0], plain[-1]
            print(f"peak RSS grew {hi['peak_mb'] - lo['peak_mb']:.0f} MB for "
                  f"{hi['pool_mb'] - lo['pool_mb']:.0f} MB more pool data "
                  f"(full-resolution float32 maps would add "
                  f"{(hi['n'] - lo['n']) * args.image_size ** 2 * 4 / 2**20:.0f} MB)")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "median_s": {k: statistics.median(v) for k, v in
                                                        times.items()},
                       "images_per_s": rate, "ratio_b_over_a": ratio_ba,
                       "max_abs_diff_two_pass": float(diff), "threads_images_per_s": threads,
                       "memory": memory}, f, indent=2)


if __name__ == "__main__":
    main()
