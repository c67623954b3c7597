"""The pool of a campaign: its images and masks on disk, and the manifest that lists them."""

import csv
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from torch.utils.data import Dataset

from .._validation import list_problems
from ..datasets import read_image, read_mask, resize_image, resize_mask, split_mask_field
from ._common import IMAGE_SUFFIXES, MANIFEST_COLUMNS, CampaignError, ManifestColumnsWarning


class PoolImages(Dataset):
    """Pool images read from disk and resized on access, with their ROI masks if any.

    Items are ``(image (C, H, W) float32, mask (H, W) bool or None)``, which
    :func:`~xal_sklearn.score_pool` and the strategies stream batch by batch; a
    batch's files are decoded by ``n_threads`` threads at once (Pillow decodes and
    resizes without holding the GIL).
    """

    def __init__(self, root, images, masks, size, rgb=False, n_threads=None):
        # a mask entry may name several files separated by ";": the ROI is their union
        self.root, self.images, self.masks = Path(root), list(images), list(masks)
        self.size, self.rgb = tuple(size), rgb
        self.n_threads = n_threads

    def __len__(self):
        return len(self.images)

    def image(self, i):
        return self.read(i)[0]

    def read(self, i):
        """The image at the model's size, and the original's ``(width, height)``."""
        original = read_image(self.root / self.images[i], as_gray=not self.rgb)
        return resize_image(original, self.size), (original.shape[2], original.shape[1])

    def mask(self, i):
        names = split_mask_field(self.masks[i])
        if not names:
            return None
        return resize_mask(read_mask([self.root / name for name in names]), self.size)

    def __getitem__(self, i):
        return self.image(i), self.mask(i)

    def __getitems__(self, indices):
        """Items of ``indices`` (torch's batched fetch), decoded in threads, in order."""
        threads = self.n_threads or min(4, os.cpu_count() or 1)
        if threads <= 1 or len(indices) <= 1:
            return [self[i] for i in indices]
        with ThreadPoolExecutor(threads, thread_name_prefix="xal-decode") as pool:
            return list(pool.map(self.__getitem__, indices))


def manifest_rois(pool):
    """The manifest's ROI of each image of ``pool`` (None where it has none), or None when
    no image has one: what a strategy's ``roi_masks`` gets, the ROI model drawing the rest."""
    given = [pool.mask(k) for k in range(len(pool))]
    return given if any(m is not None for m in given) else None


def list_pool(root, manifest, folder):
    """``(images, masks, ids)`` of the pool: every image file under ``root``, or the
    manifest's rows (all checked: each bad row named, with a hint where the paths
    would resolve); columns the campaign does not read are named in a warning."""
    study = Path(folder).resolve()
    if manifest is None:
        files = sorted(p for p in root.rglob("*") if p.is_file()
                       and str(p).lower().endswith(IMAGE_SUFFIXES)
                       and not p.resolve().is_relative_to(study))
        images, masks = [str(p.relative_to(root)) for p in files], [""] * len(files)
        ids = [""] * len(files)
    else:
        try:
            with open(manifest, newline="", encoding="utf-8-sig") as f:
                rows = list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise CampaignError(f"Could not read manifest {manifest}: {exc}") from exc
        if not rows or "image" not in rows[0]:
            raise CampaignError(f"Manifest {manifest} needs an 'image' column and rows.")
        images = [(r.get("image") or "").strip() for r in rows]
        masks = [";".join(split_mask_field(r.get("mask"))) for r in rows]
        ids = [(r.get("id") or "").strip() for r in rows]
        problems = []
        for line, (image, mask) in enumerate(zip(images, masks), start=2):
            for name in [image] + split_mask_field(mask):
                path = (root / name).resolve()
                if not name or not path.is_relative_to(root) or not path.is_file():
                    problems.append(f"line {line}: {name!r} is not a file inside {root}")
        if problems:
            raise CampaignError(list_problems(f"Manifest {manifest}", problems)
                                + manifest_root_hint(root, manifest, images, masks))
        unread = [c for c in rows[0] if c and c not in MANIFEST_COLUMNS]
        if unread:
            warnings.warn(
                f"Manifest {manifest}: column(s) {', '.join(map(repr, unread))} are not "
                f"read; a campaign reads {', '.join(MANIFEST_COLUMNS)}. Its labels come "
                "from the expert (import), never from the manifest, and batches are not "
                "spread by group.", ManifestColumnsWarning, stacklevel=3)
    if not images:
        raise CampaignError(f"No image files under {root}.")
    return images, masks, ids


def manifest_root_hint(root, manifest, images, masks):
    """Where a manifest's paths would resolve, said after its problems: they are read
    relative to the image folder, and are often written relative to the manifest's own."""
    names = [n for image, mask in zip(images, masks) for n in [image, *split_mask_field(mask)]]
    hint = (f"\nThe manifest's paths are read relative to the image folder ({root}), not to "
            "the manifest's folder.")
    candidates = [Path(manifest).resolve().parent, *list(root.parents)[:3]]
    for folder in dict.fromkeys(candidates):
        if names and all(n and (folder / n).is_file() for n in names):
            return hint + f" They are all files under {folder}: pass that as the image folder."
    return hint
