"""A resized copy of a manifest folder, to carry real data to a machine with a GPU.

Quoted by docs/benchmarks.md (the GPU runs).

The brain-MRI folder (256 px PNGs, 108 MB) is larger than what can travel to a lent
GPU machine. This writes what ``load_image_folder(root, image_size=SIZE)`` returns
back out as a manifest folder of the same layout (``images/``, ``masks/``,
``labels.csv`` with the same labels and groups), masks as 8-bit 0/255 and images as
8-bit PNGs like the originals (the loader's resized values rounded to 1/255, 26 MB at
128 px) or, with ``--bits 16``, 16-bit ones (to within 1/65535, but 73 MB). An image
with several mask files (``a.png;b.png``, as in BUSI) gets their union under the first
name. Loading the copy at the same size is checked against the original before it
returns.

    python benchmarks/resized_copy.py ../shared/data/brain-tumor-figshare mri128 --size 128

The copy is data: keep it out of the repository (``.git/info/exclude``).
"""

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image

from xal_sklearn.datasets import load_image_folder, split_mask_field


def write_copy(root, out, size, bits=8):
    data = load_image_folder(root, "labels.csv", image_size=size, cache=False)
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    with open(Path(root) / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if len(rows) != len(data.y):
        raise SystemExit(f"{root}: {len(rows)} manifest rows but {len(data.y)} loaded images.")
    top, dtype = (255, np.uint8) if bits == 8 else (65535, np.uint16)
    for row, x, m in zip(rows, data.X, data.roi_masks):
        (out / row["image"]).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(x[0].astype(np.float64) * top).astype(dtype)).save(
            out / row["image"])
        row["mask"] = (split_mask_field(row["mask"]) or [""])[0]  # the union, one file
        if row["mask"]:
            (out / row["mask"]).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(m.astype(np.uint8) * 255).save(out / row["mask"])
    with open(out / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image", "mask", "label", "group"])
        writer.writeheader()
        writer.writerows({k: row[k] for k in writer.fieldnames} for row in rows)
    back = load_image_folder(out, "labels.csv", image_size=size, cache=False)
    err = float(np.abs(back.X - data.X).max())
    same = (np.array_equal(back.y, data.y) and np.array_equal(back.roi_masks, data.roi_masks)
            and np.array_equal(back.groups, data.groups))
    if err > 0.5 / top + 1e-6 or not same:
        raise SystemExit(f"The copy does not read back as the original: max |dX| {err:.2e}, "
                         f"labels, masks and groups equal: {same}.")
    print(f"{len(rows)} images of {size} px written to {out}; read back: max |dX| = {err:.1e}, "
          "labels, masks and groups equal.")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", help="manifest folder with labels.csv (image,mask,label,group)")
    p.add_argument("out", help="folder to write the copy into")
    p.add_argument("--size", type=int, default=128, help="side in pixels")
    p.add_argument("--bits", type=int, default=8, choices=(8, 16), help="bits a pixel")
    args = p.parse_args()
    write_copy(args.root, args.out, args.size, args.bits)


if __name__ == "__main__":
    main()
