"""Image folders: one subfolder per class (the image_dataset_from_directory layout), via Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seqdeploy.errors import DataError, InputFileNotFound
from seqdeploy.preprocess import Scale
from seqdeploy.spec import DataSpec

from seqdeploy.data.common import Splits, _check_enough, _fingerprint, _split_indices


def images_source(data: DataSpec, seed: int) -> Splits:
    """An image folder, one subfolder per class (Keras ``image_dataset_from_directory``'s layout)."""
    from seqdeploy.preprocess.image_files import BadImage, ImageLoader, class_folders

    root = Path(data.path) if data.path is not None else Path(".")
    if not root.exists():
        raise InputFileNotFound(f"image folder {str(root)!r} does not exist; check [data] path in the spec")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; expected a folder with one subfolder of images per class")
    try:
        import PIL  # noqa: F401
    except ModuleNotFoundError:
        raise DataError("image folders need Pillow; install it with: pip install 'seqdeploy[images]'") from None
    size = data.image_size
    h, w = (size, size) if isinstance(size, int) else size
    loader = ImageLoader(h, w, data.channels, data.resize, data.alpha)
    folders = class_folders(root)
    if not folders:
        raise DataError(f"{root}: no class subfolders; expected {root}/<class name>/<image files> (one subfolder per "
                        "class)")
    images, ids, names, skipped = [], [], [], []
    for name, files in folders:
        got = 0
        for f in files:
            try:
                images.append(loader.load(f))
            except BadImage as exc:
                if not data.skip_bad_files:
                    raise DataError(f"{exc.path}: {exc.reason}; remove or fix the file, or set skip_bad_files = "
                                    "true in [data] to skip such files") from None
                skipped.append(exc.path)
                continue
            ids.append(len(names))
            got += 1
        if not got:
            what = "no images" if not files else f"no readable images ({len(files)} bad file(s) skipped)"
            raise DataError(f"{root / name}: class folder has {what}; put PNG/JPEG/BMP/GIF images in it or remove "
                            "the folder")
        names.append(name)
    if len(names) < 2:
        raise DataError(f"{root}: only one class folder {names[0]!r}; a classifier needs at least two (one subfolder "
                        "per class)")
    if data.task == "binary" and len(names) != 2:
        raise DataError(f"{root}: task = \"binary\" but there are {len(names)} class folders {names[:10]}; use "
                        "task = \"multiclass\"")
    raw = np.stack(images).astype(np.uint8)
    y = np.asarray(ids, dtype=np.int64)
    _check_enough(len(y), str(root))
    tr, te = _split_indices(len(y), data.test_fraction, seed, stratify=y)
    kind = Scale(1.0 / 255.0, 0.0, loader.shape, "uint8", model_shape=(h, w, data.channels), resize=data.resize,
                 alpha=data.alpha)
    x = kind.apply(raw)
    notes = (f"skipped {len(skipped)} bad file(s), e.g. {skipped[0]}",) if skipped else ()
    return Splits(x_train=x[tr], y_train=y[tr], x_test=x[te], y_test=y[te], raw_test=raw[te], input_name="image",
                  task=data.task or "multiclass", labels=tuple(names), target_name=None,
                  preprocessing=kind.to_record(),
                  fingerprint=_fingerprint(f"images:{kind.to_record()}:{names}", raw, y),
                  source=f"images:{root.name}", notes=notes)
