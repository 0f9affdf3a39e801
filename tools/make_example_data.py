"""Write the example data of the bring-your-own-data specs in models/ (nothing is downloaded).

    python tools/make_example_data.py            # rewrites models/data/

* ``models/data/reviews.csv`` — SYNTHETIC product reviews (seqdeploy's seeded review
  generator: sentiment words, negation, contrast) with an id, a ``review`` text
  column and a ``label`` column holding ``negative`` / ``positive``; for
  ``models/reviews_csv_text.toml``.
* ``models/data/digit_images/<digit>/*.png`` — a class-per-folder image set made
  from scikit-learn's bundled 8x8 handwritten digits (UCI, shipped with
  scikit-learn): 40 images of each digit 0-9, upscaled to 24x24 and written in
  the modes people's folders hold (greyscale, RGB, palette, opaque RGBA,
  JPEG, and one PNG stored sideways with an EXIF
  orientation tag); for ``models/digit_folders_cnn.toml``.
* ``models/data/customers.csv`` — SYNTHETIC customer table (seeded): numeric
  ``tenure_months`` and ``monthly_charges``, categorical ``plan``, ``region`` and
  ``contract``, and a ``churned`` yes/no label from a noisy logistic rule; for
  ``models/customers_mixed_mlp.toml``.

Deterministic: the same files on every run (PNG/JPEG bytes depend on the Pillow version).
"""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "models" / "data"


def reviews(path: Path, n: int = 1500, seed: int = 3) -> None:
    from seqdeploy.data import synth_review

    rng = np.random.default_rng(seed)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "review", "label"])
        for i in range(n):
            label = int(rng.integers(0, 2))
            text = synth_review(rng, label)
            if rng.random() < 0.3:  # people's punctuation and capitals
                text = text.capitalize() + rng.choice([".", "!", "!!", "..."])
            w.writerow([f"r{i:04d}", text, "positive" if label else "negative"])


def digit_images(root: Path, per_class: int = 40, size: int = 24) -> None:
    from PIL import Image
    from sklearn.datasets import load_digits

    ds = load_digits()
    if root.exists():
        shutil.rmtree(root)
    idx = np.arange(size) * 8 // size
    for digit in range(10):
        folder = root / str(digit)
        folder.mkdir(parents=True)
        picks = np.flatnonzero(ds.target == digit)[:per_class]
        for j, i in enumerate(picks):
            pixels = (ds.images[i][idx][:, idx] * (255.0 / 16.0)).round().astype(np.uint8)
            img = Image.fromarray(pixels, mode="L")
            style = j % 6
            name = folder / f"{digit}_{j:03d}"
            if style == 0:
                img.save(name.with_suffix(".png"))
            elif style == 1:
                img.convert("RGB").save(name.with_suffix(".png"))
            elif style == 2:
                img.convert("P").save(name.with_suffix(".png"))  # palette
            elif style == 3:  # RGBA, opaque (the alpha path: composited over white, pixels unchanged)
                img.convert("RGBA").save(name.with_suffix(".png"))
            elif style == 4:
                img.save(name.with_suffix(".jpg"), quality=95)
            else:  # stored turned 90 degrees clockwise with EXIF orientation 8: loads upright
                exif = Image.Exif()
                exif[0x0112] = 8
                img.transpose(Image.Transpose.ROTATE_270).save(name.with_suffix(".png"), exif=exif)


def customers(path: Path, n: int = 800, seed: int = 11) -> None:
    rng = np.random.default_rng(seed)
    plans = ["basic", "standard", "premium"]
    regions = ["north", "south", "east", "west"]
    contracts = ["monthly", "yearly"]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["customer", "tenure_months", "monthly_charges", "plan", "region", "contract", "churned"])
        for i in range(n):
            plan = plans[int(rng.integers(0, 3))]
            region = regions[int(rng.integers(0, 4))]
            contract = contracts[int(rng.random() < 0.4)]
            tenure = int(rng.integers(1, 72))
            charges = round(float({"basic": 20, "standard": 50, "premium": 90}[plan] + rng.normal(0, 8)), 2)
            logit = (1.2 - 0.05 * tenure + 0.02 * (charges - 50) + (1.5 if contract == "monthly" else -1.0)
                     + {"north": 0.0, "south": 0.6, "east": -0.4, "west": 0.2}[region]
                     + (-0.8 if plan == "premium" else 0.0))
            churned = rng.random() < 1 / (1 + np.exp(-logit))
            w.writerow([f"c{i:04d}", tenure, charges, plan, region, contract, "yes" if churned else "no"])


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    reviews(OUT / "reviews.csv")
    digit_images(OUT / "digit_images")
    customers(OUT / "customers.csv")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
