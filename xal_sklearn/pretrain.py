"""Self-supervised warm start: train a network's feature extractor on the unlabelled pool.

Active learning always has the whole pool at hand; :func:`pretrain_encoder` learns
features from it without a single label, and ``CNNClassifier(init_weights=...)``
starts every fit from them. Two methods:

* ``"simclr"`` (Chen et al., ICML 2020): two augmented views of each image, a
  projection MLP, and the NT-Xent loss that pulls the two views of an image
  together and pushes the other images of the batch away (contrastive);
* ``"byol"`` (Grill et al., NeurIPS 2020): an online network with a predictor
  regresses the projection of the other view made by a slowly moving average of
  itself (non-contrastive: no negatives, so small batches suffice).

The features are the input of the network's last linear layer (see
:mod:`xal_sklearn.embedding`), so any network with a linear head works, and
the head itself is not trained here (a classifier's head is fitted on labels).

Augmentations are written for grey-scale medical images, in torch: a random
resized crop with a small rotation, brightness and contrast jitter, Gaussian
blur and noise; no colour jitter, and no flips unless ``flips=True`` (flips
change laterality, which matters in many scans).

Choice of implementation: lightly has these losses and heads but pulls in
torchvision (which does not import beside the CPU torch wheel our machines
use), PyTorch Lightning and Hydra; kornia's augmentations would add a
dependency for four tensor operations. The losses are a few lines of torch each
and are checked against hand-computed values in the tests.
"""

import contextlib
import copy
import inspect
import json
import math
import numbers
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils import check_random_state
from torch import nn

from ._memory import reuse_freed_memory
from ._names import DEFAULT_PRETRAIN_EPOCHS, PRETRAIN_METHODS
from ._persist import FormatError, atomic_path
from ._version import __version__
from ._pool import iter_pool, pool_length, progress_bar
from ._validation import check_device, check_finite_batch, check_numeric, resolve_device
from .backbones import build_backbone
from .embedding import find_head
from .modules import SmallCNN, to_channels_last

__all__ = ["DEFAULT_PRETRAIN_EPOCHS", "EncoderWeights", "EncoderMismatchError",
           "PRETRAIN_METHODS", "augment_views", "byol_loss", "encoder_features", "nt_xent_loss",
           "pretrain_encoder"]

_FORMAT, _VERSION = "xal-encoder-weights", 1


class EncoderMismatchError(ValueError):
    """Encoder weights that do not fit the network they are loaded into."""


# --- losses ------------------------------------------------------------------------------

def nt_xent_loss(z1, z2, temperature=0.2):
    """SimCLR's normalised-temperature cross-entropy over a batch of view pairs.

    Row ``i`` of ``z1`` and of ``z2`` are two views of one image; each view's
    positive is the other view, its negatives the ``2N - 2`` other views.
    """
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    n = len(z1)
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, target)


def byol_loss(p, z):
    """BYOL's regression loss ``2 - 2 cos(p, z)``, averaged; ``z`` is not differentiated."""
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=1)).mean()


def _mlp(d_in, hidden, d_out):
    return nn.Sequential(nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, d_out))


# --- augmentations ----------------------------------------------------------------------

def augment_views(x, generator, crop_scale=(0.5, 1.0), rotation=15.0, flips=False,
                  intensity=0.4, blur=(0.1, 1.5), noise=0.05):
    """One random view of each image of a batch ``(N, C, H, W)``, all on torch.

    Random resized crop (area fraction in ``crop_scale``, aspect ratio in
    [3/4, 4/3]) with a rotation of up to ``rotation`` degrees and, only with
    ``flips``, a horizontal flip; then, each with probability 0.8 / 0.5 / 0.5,
    contrast and brightness jitter of relative size ``intensity`` (around each
    image's mean), Gaussian blur with sigma in ``blur`` (pixels), and Gaussian
    noise of up to ``noise`` times the image's standard deviation. No colour
    operations, so grey-scale images stay grey-scale.
    """
    n, c, h, w = x.shape
    dev, g = x.device, generator

    def u(lo, hi, size=(n,)):
        return lo + (hi - lo) * torch.rand(size, generator=g).to(dev)

    area = u(*crop_scale)
    ratio = torch.exp(u(math.log(3 / 4), math.log(4 / 3)))
    sx, sy = torch.sqrt(area * ratio).clamp(max=1), torch.sqrt(area / ratio).clamp(max=1)
    tx, ty = u(-1, 1) * (1 - sx), u(-1, 1) * (1 - sy)
    theta_r = u(-rotation, rotation) * math.pi / 180
    flip = (torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).to(dev) if flips
            else torch.ones(n, device=dev))
    cos, sin = torch.cos(theta_r), torch.sin(theta_r)
    affine = torch.stack([torch.stack([sx * cos * flip, -sy * sin, tx], 1),
                          torch.stack([sx * sin * flip, sy * cos, ty], 1)], 1)
    grid = F.affine_grid(affine, (n, c, h, w), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    std = out.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    jitter = (torch.rand(n, generator=g) < 0.8).to(dev).view(-1, 1, 1, 1)
    contrast = u(1 - intensity, 1 + intensity).view(-1, 1, 1, 1)
    bright = (u(-intensity, intensity) / 2).view(-1, 1, 1, 1) * std
    out = torch.where(jitter, (out - mean) * contrast + mean + bright, out)

    if blur is not None:
        sigma = u(*blur)
        radius = max(1, int(math.ceil(2 * blur[1])))
        t = torch.arange(-radius, radius + 1, device=dev, dtype=out.dtype)
        k = torch.exp(-t[None] ** 2 / (2 * sigma[:, None] ** 2))
        k = k / k.sum(1, keepdim=True)                                     # (N, K)
        k = k.repeat_interleave(c, 0)                                      # (N*C, K)
        flat = out.reshape(1, n * c, h, w)
        blurred = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"),
                           k[:, None, None, :], groups=n * c)
        blurred = F.conv2d(F.pad(blurred, (0, 0, radius, radius), mode="replicate"),
                           k[:, None, :, None], groups=n * c).reshape(n, c, h, w)
        out = torch.where((torch.rand(n, generator=g) < 0.5).to(dev).view(-1, 1, 1, 1),
                          blurred, out)
    if noise:
        amount = (u(0, noise) * (torch.rand(n, generator=g) < 0.5).to(dev)).view(-1, 1, 1, 1)
        out = out + amount * std * torch.randn(out.shape, generator=g).to(dev)
    return out.contiguous()


# --- the weights object ---------------------------------------------------------------------

def _head_prefix(module):
    head = find_head(module)
    name = next(n for n, m in module.named_modules() if m is head)
    return name + "."


class EncoderWeights:
    """A pretrained feature extractor's weights and how they were made.

    ``state`` maps parameter and buffer names of the network (without its last
    linear layer) to tensors; ``info`` records the method, epochs, data shape,
    network and versions. Saved with :meth:`save` as a torch file that holds
    only tensors, strings and numbers, read back with ``weights_only=True``
    (nothing is unpickled).
    """

    def __init__(self, state, info):
        self.state = dict(state)
        self.info = dict(info)

    def __repr__(self):
        i = self.info
        return (f"EncoderWeights({i.get('method')}, {i.get('epochs')} epochs on "
                f"{i.get('n_images')} images of {'x'.join(map(str, i.get('image_shape', [])))}, "
                f"{i.get('module')})")

    def save(self, path):
        """Write to ``path`` atomically (a kill never leaves half a file)."""
        path = Path(path)
        with atomic_path(path) as tmp:
            torch.save({"format": _FORMAT, "version": _VERSION, "info": json.dumps(self.info),
                        "state": {k: v.detach().cpu().contiguous() for k, v in self.state.items()}},
                       tmp)
        return path

    @classmethod
    def load(cls, path):
        """Read a file written by :meth:`save`; anything else raises ``FormatError``."""
        path = Path(path)
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise FileNotFoundError(f"No encoder weights at {path}.") from None
        except Exception as exc:  # corrupt, truncated, or holding objects
            raise FormatError(f"{path} is not an encoder-weights file written by "
                              f"pretrain_encoder (torch.load said: {exc}).") from exc
        if not isinstance(raw, dict) or raw.get("format") != _FORMAT:
            raise FormatError(f"{path} is not an encoder-weights file written by "
                              "pretrain_encoder (no xal-encoder-weights header).")
        if raw.get("version") != _VERSION:
            raise FormatError(f"{path} has encoder-weights format version "
                              f"{raw.get('version')!r}; this xal-sklearn reads {_VERSION}.")
        state = raw.get("state")
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                                  for v in state.values()):
            raise FormatError(f"{path}: its weights are not a mapping of names to tensors.")
        weights = cls(state, json.loads(raw.get("info", "{}")))
        weights.info.setdefault("source", str(path))
        return weights

    def check_fits(self, module):
        """Raise :class:`EncoderMismatchError` unless every tensor fits ``module``."""
        where = self.info.get("source", "the encoder weights")
        prefix = _head_prefix(module)
        own = {k: v for k, v in module.state_dict().items() if not k.startswith(prefix)}
        missing = [k for k in own if k not in self.state]
        extra = [k for k in self.state if k not in own]
        shapes = [f"{k}: file {tuple(self.state[k].shape)}, network {tuple(own[k].shape)}"
                  for k in own if k in self.state and self.state[k].shape != own[k].shape]
        if missing or extra or shapes:
            made = self.info.get("module_repr") or self.info.get("module", "another network")
            details = "; ".join(filter(None, [
                f"shapes differ ({', '.join(shapes[:4])}{', ...' if len(shapes) > 4 else ''})"
                if shapes else "",
                f"the network has {', '.join(missing[:4])} that the file lacks" if missing else "",
                f"the file has {', '.join(extra[:4])} that the network lacks" if extra else ""]))
            raise EncoderMismatchError(
                f"{where} does not fit this {type(module).__name__}: {details}. The weights "
                f"were made for {made}; build the network as it was pretrained (the same "
                "module and module__ parameters).")

    def load_into(self, module):
        """Copy the weights into ``module`` (its last linear layer is left as it is)."""
        self.check_fits(module)
        module.load_state_dict(self.state, strict=False)
        return module


def as_encoder_weights(init_weights):
    """A path or an :class:`EncoderWeights` -> :class:`EncoderWeights`."""
    if isinstance(init_weights, EncoderWeights):
        return init_weights
    if isinstance(init_weights, (str, Path)):
        return EncoderWeights.load(init_weights)
    raise TypeError("init_weights must be a path to a file written by EncoderWeights.save or "
                    f"an EncoderWeights object; got {type(init_weights).__name__}.")


# --- pretraining ---------------------------------------------------------------------------

class _Batches:
    """Shuffled batches of a pool: arrays and memmaps by index, other pools from memory."""

    def __init__(self, X):
        self.n = pool_length(X)
        if isinstance(X, np.ndarray):
            if X.ndim != 4:
                raise ValueError("pretrain_encoder needs 2-D images (n, channels, height, "
                                 f"width); got an array of shape {X.shape}.")
            check_numeric(X)
            self.X, self.memory = X, None
        else:  # Datasets, lists, tensors: read once, in order, with the pool's own checks
            parts = [x for x, _, _, _ in iter_pool(X, None, 256, name="X")]
            self.X, self.memory = None, torch.cat(parts)
            if self.memory.dim() != 4:
                raise ValueError("pretrain_encoder needs 2-D images (n, channels, height, "
                                 f"width); got items of shape {tuple(self.memory.shape[1:])}.")
        self.image_shape = tuple((self.X if self.memory is None else self.memory).shape[1:])

    def __call__(self, rng, batch_size):
        order = rng.permutation(self.n)
        for start in range(0, self.n - batch_size + 1, batch_size):  # full batches only
            idx = np.sort(order[start:start + batch_size])
            if self.memory is not None:
                yield self.memory[torch.from_numpy(idx)]
                continue
            x = torch.from_numpy(np.ascontiguousarray(self.X[idx], dtype=np.float32))
            check_finite_batch(x, "X", offset=0)
            yield x


def _build_module(module, in_channels):
    if module is None:
        return SmallCNN(in_channels=in_channels)
    if hasattr(module, "get_params_for") and hasattr(module, "initialized_instance"):
        # a skorch net (CNNClassifier): its network as fit would build it, so the weights fit
        kwargs = module.get_params_for("module")
        cls = module.module
        if isinstance(cls, str):  # a torchvision backbone by name
            return build_backbone(cls, in_channels=in_channels, **kwargs)
        if isinstance(cls, type):
            accepted = inspect.signature(cls).parameters
            if "in_channels" in accepted:
                kwargs.setdefault("in_channels", in_channels)
            if "n_classes" in accepted:  # the head is not pretrained; any size will do
                n = module.get_params().get("n_classes")
                kwargs.setdefault("n_classes", int(n) if n else 2)
            return module.initialized_instance(cls, kwargs)
        return copy.deepcopy(cls)
    if isinstance(module, str):
        return build_backbone(module, in_channels=in_channels)
    if isinstance(module, nn.Module):
        return copy.deepcopy(module)
    if isinstance(module, type) and issubclass(module, nn.Module):
        return module(in_channels=in_channels)
    raise TypeError("module must be None, an nn.Module class or instance, or a CNNClassifier; "
                    f"got {module!r}.")


def pretrain_encoder(X, module=None, method="simclr", epochs=DEFAULT_PRETRAIN_EPOCHS,
                     batch_size=256, *, lr=1e-3,
                     weight_decay=1e-6, temperature=0.2, projection_dim=64, ema=0.99,
                     flips=False, crop_scale=(0.5, 1.0), random_state=None, device="auto",
                     progress=None):
    """Self-supervised training of a network's feature extractor on unlabelled images.

    Parameters
    ----------
    X : array-like (N, C, H, W), memmap, torch Dataset
        The unlabelled pool. Labels are never asked for. Arrays and memmaps are
        read batch by batch; other pools are read into memory once.
    module : None, nn.Module class or instance, backbone name, or CNNClassifier, default=None
        The network whose features (the input of its last linear layer) are
        trained. None is :class:`~xal_sklearn.SmallCNN` with the pool's channel
        count; a class is built with ``in_channels``; an instance is copied; a
        name of :data:`xal_sklearn.backbones.BACKBONES` builds that network; a
        :class:`~xal_sklearn.CNNClassifier` gives its network as ``fit`` would
        build it (``module`` and ``module__*`` parameters), so the weights fit
        ``CNNClassifier(init_weights=...)`` with the same parameters.
    method : {"simclr", "byol"}, default="simclr"
    epochs : int >= 1, default=50
        Passes over the pool (full batches only: the last partial batch is
        dropped, a different one each epoch).
    batch_size : int, default=256
        Images per step (each gives two views). The pool needs at least one
        full batch.
    lr, weight_decay : float
        Adam, with a cosine schedule to 0 over all steps.
    temperature : float, default=0.2
        SimCLR's softmax temperature.
    projection_dim : int, default=64
        Output size of the projection MLP (hidden width twice the features').
    ema : float in (0, 1), default=0.99
        BYOL's starting target momentum, raised to 1 on a cosine over training.
    flips : bool, default=False
        Random horizontal flips; off by default because they swap laterality.
    crop_scale : (float, float), default=(0.5, 1.0)
        Area fraction of the random resized crops.
    random_state : int, RandomState instance or None
        Seeds initialisation, batch order and augmentations (the global torch
        RNG is left alone): the same seed gives the same weights on one machine.
    device : {"auto", "cpu", "cuda"} or torch.device, default="auto"
    progress : bool or None, default=None
        A tqdm bar over epochs with the loss (None: only on a terminal).

    Returns
    -------
    EncoderWeights
        ``info`` records method, epochs, batch size, the pool's size and image
        shape, the network, the final loss, the seconds it took and versions.

    Raises
    ------
    ValueError
        Unknown method, ``epochs < 1``, a pool smaller than one batch, a
        network without a linear head.
    """
    if method not in PRETRAIN_METHODS:
        raise ValueError(f"Unknown pretraining method {method!r}; choose one of "
                         f"{', '.join(PRETRAIN_METHODS)}.")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
    if batch_size < 2:
        raise ValueError("batch_size must be >= 2: the losses compare images of a batch.")
    if not 0 < ema < 1:
        raise ValueError(f"ema must lie in (0, 1), got {ema!r}.")
    device = torch.device(resolve_device(device))
    check_device(device)
    batches = _Batches(X)
    if batches.n < batch_size:
        raise ValueError(f"The pool has {batches.n} images, fewer than one batch of "
                         f"{batch_size}; pass a smaller batch_size.")
    rng = check_random_state(random_state)
    seed = int(rng.randint(2**31 - 1))
    start = time.monotonic()
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []), \
            (reuse_freed_memory() if device.type == "cpu" else contextlib.nullcontext()):
        torch.manual_seed(seed)
        net = _build_module(module, batches.image_shape[0]).to(device)
        dim = find_head(net).in_features
        projector = _mlp(dim, 2 * dim, projection_dim).to(device)
        predictor = _mlp(projection_dim, 2 * dim, projection_dim).to(device) \
            if method == "byol" else None
        if device.type == "cpu":
            to_channels_last(net)
        target = None
        if method == "byol":
            target = (copy.deepcopy(net), copy.deepcopy(projector))
            for part in target:
                part.requires_grad_(False)
        params = list(net.parameters()) + list(projector.parameters()) + \
            (list(predictor.parameters()) if predictor is not None else [])
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        steps = epochs * (batches.n // batch_size)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        gen = torch.Generator().manual_seed(seed)
        net.train()
        step, loss_value = 0, float("nan")
        bar = progress_bar(range(epochs), progress, epochs, f"Pretraining ({method})")
        for _ in bar:
            total, count = 0.0, 0
            for x in batches(rng, batch_size):
                x = x.to(device)
                v1, v2 = augment_views(x, gen, crop_scale, flips=flips), \
                    augment_views(x, gen, crop_scale, flips=flips)
                if device.type == "cpu":
                    v1 = v1.contiguous(memory_format=torch.channels_last)
                    v2 = v2.contiguous(memory_format=torch.channels_last)
                # not embedding.EmbeddingCapture: that one detaches, and here the
                # encoder must get the gradient through its features
                feats = [encoder_features(net, v1), encoder_features(net, v2)]
                z1, z2 = projector(feats[0]), projector(feats[1])
                if method == "simclr":
                    loss = nt_xent_loss(z1, z2, temperature)
                else:
                    with torch.no_grad():
                        t_net, t_proj = target
                        t = []
                        for v in (v1, v2):
                            t.append(t_proj(encoder_features(t_net, v)))
                    loss = byol_loss(predictor(z1), t[1]) + byol_loss(predictor(z2), t[0])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                if target is not None:  # momentum from ema to 1 on a cosine
                    tau = 1 - (1 - ema) * (math.cos(math.pi * step / steps) + 1) / 2
                    with torch.no_grad():
                        for online, slow in ((net, target[0]), (projector, target[1])):
                            for p, q in zip(online.parameters(), slow.parameters()):
                                q.mul_(tau).add_(p.detach(), alpha=1 - tau)
                            for b, c in zip(online.buffers(), slow.buffers()):
                                c.copy_(b)
                total += float(loss.detach()) * len(x)
                count += len(x)
            loss_value = total / max(count, 1)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{loss_value:.3f}")
        net.eval()
    prefix = _head_prefix(net)
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()
             if not k.startswith(prefix)}
    info = {"method": method, "epochs": int(epochs), "batch_size": int(batch_size),
            "n_images": int(batches.n), "image_shape": list(batches.image_shape),
            "module": type(net).__name__,
            "module_repr": (f"a {type(net).__name__} with {sum(p.numel() for p in net.parameters())}"
                            f" parameters and {dim} features"),
            "feature_dim": int(dim), "final_loss": loss_value, "lr": lr,
            "temperature": temperature if method == "simclr" else None,
            "ema": ema if method == "byol" else None, "flips": bool(flips),
            "crop_scale": list(crop_scale), "random_state": seed,
            "seconds": round(time.monotonic() - start, 1), "device": str(device),
            "torch": torch.__version__, "python": platform.python_version(),
            "xal_sklearn": __version__}
    return EncoderWeights(state, info)


def encoder_features(module, x):
    """The input of ``module``'s last linear layer for a batch ``x``, flattened.

    A forward pre-hook for one call, then removed; gradients flow through it
    (this is what pretraining trains). For a fitted classifier use
    :func:`~xal_sklearn.pool_embeddings`.
    """
    seen = []
    handle = find_head(module).register_forward_pre_hook(
        lambda _m, inputs: seen.append(inputs[0].reshape(len(inputs[0]), -1)))
    try:
        module(x)
    finally:
        handle.remove()
    return seen[0]

