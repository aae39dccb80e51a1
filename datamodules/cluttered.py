"""Cluttered Fashion-MNIST: each 28x28 Fashion-MNIST item at a random place on a larger black canvas, with clutter.

The classic cluttered-MNIST test of attention (Mnih et al. 2014: a digit at a random place on a 60x60 canvas with
random 8x8 fragments of other digits) on Fashion-MNIST. Construction of one canvas of side ``canvas_size``:

1. the object (its 28x28 frame) at a uniformly random position, fully inside the canvas;
2. ``num_fragments`` crops of ``fragment_size`` x ``fragment_size`` px, each from a uniformly random position of
   a uniformly random OTHER image of the same split (train clutter from training images, test clutter from test
   images), each at a uniformly random position on the canvas (it may overlap the object and other fragments).

Pieces are combined by a pixel-wise maximum (max blend): the result does not depend on the order of the pieces,
every object pixel keeps at least its own brightness (the object stays visible), and a fragment brightens the
object's dark parts where they overlap, as clutter does. Pasting the object over the clutter instead would cut a
clutter-free 28x28 window around it, an easy cue for where the object is.

Every random draw comes from one ``torch.Generator`` per split, seeded from ``(clutter_seed, split)``, all drawn up
front in a fixed order; the canvases are then rendered in chunks with batched tensor operations (a few seconds for
the 70k canvases of 60x60). The result, with each object's box, is cached under the data root in a file named by
every generation option, the format version and a digest of the source images (the same options on other files
give another cache). A cache that cannot be read or does not match is regenerated, with a warning.

Boxes are ``(x0, y0, x1, y1)`` in canvas pixels, ends exclusive: the tight box of the object's non-zero pixels
(its 28x28 frame for a blank image). They describe the canvases as stored, i.e. as evaluation sees them; training
crops or flips (off by default) move the object but not the box. See :meth:`ClutteredFashionMNISTDataModule.boxes`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from torch.utils.data import Dataset

from datamodules.datasets import TensorImageDataset
from datamodules.fashion_mnist import FashionMNISTDataModule

log = logging.getLogger(__name__)

OBJECT_SIZE = 28  # Fashion-MNIST's side
FORMAT_VERSION = 1  # of the construction and of the cache file: a change makes new caches
CACHE_DIR = "cluttered_fmnist"  # under the data root
SPLITS = ("train", "test")
RENDER_CHUNK = 4096  # canvases rendered at once (bounded memory); the result does not depend on it


def clutter_generator(clutter_seed: int, split: str) -> torch.Generator:
    """The generator of ``split``'s canvases: seeded from a hash of ``(clutter_seed, split)``, so the splits draw
    unrelated numbers and each seed gives other canvases."""
    digest = hashlib.sha256(f"cluttered-fmnist/{clutter_seed}/{split}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def object_boxes(images: torch.Tensor) -> torch.Tensor:
    """``(N, 4)`` int64 ``(x0, y0, x1, y1)`` of each ``(N, H, W)`` image's non-zero pixels (ends exclusive); the
    whole frame for a blank image."""
    n, height, width = images.shape
    boxes = torch.tensor([0, 0, width, height]).repeat(n, 1)
    for axis, (lo, hi, side) in enumerate(((0, 2, width), (1, 3, height))):
        present = (images > 0).any(dim=1 + axis)  # columns (axis 0) or rows (axis 1) with a pixel
        position = torch.arange(side)
        found = present.any(dim=1)
        boxes[found, lo] = torch.where(present, position, side).amin(dim=1)[found]
        boxes[found, hi] = torch.where(present, position + 1, 0).amax(dim=1)[found]
    return boxes


def _paste_max(canvases: torch.Tensor, pieces: torch.Tensor, corners: torch.Tensor) -> None:
    """Max-blend square ``pieces`` ``(B, P, s, s)`` into ``canvases`` ``(B, S, S)`` (in place) with their top-left
    corners at ``corners`` ``(B, P, 2)`` as ``(x, y)``."""
    batch, _, side = pieces.shape[:3]
    size = canvases.shape[-1]
    offsets = torch.arange(side)
    rows = corners[..., 1, None] + offsets  # (B, P, s)
    cols = corners[..., 0, None] + offsets
    flat = rows[..., :, None] * size + cols[..., None, :] + (torch.arange(batch) * size * size).view(-1, 1, 1, 1)
    canvases.view(-1).scatter_reduce_(0, flat.reshape(-1), pieces.reshape(-1), reduce="amax")


def make_canvases(
    images: torch.Tensor,
    *,
    canvas_size: int,
    num_fragments: int,
    fragment_size: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluttered canvases of one split (see the module docstring): uint8 ``(N, 1, S, S)`` and the object boxes
    ``(N, 4)``, from uint8 ``(N, 28, 28)`` ``images``; the fragments come from ``images`` only."""
    n, side = len(images), OBJECT_SIZE
    if images.dtype != torch.uint8 or images.shape[1:] != (side, side):
        raise ValueError(f"images must be uint8 (N, {side}, {side}), got {images.dtype} {tuple(images.shape)}")
    if num_fragments and n < 2:
        raise ValueError(f"clutter is cropped from other images of the split, which needs at least 2; got {n}")
    # Every draw, in a fixed order, before any rendering: the canvases do not depend on RENDER_CHUNK.
    place = torch.randint(0, canvas_size - side + 1, (n, 2), generator=generator)
    source = torch.randint(0, max(1, n - 1), (n, num_fragments), generator=generator)
    source += source >= torch.arange(n).unsqueeze(1)  # skip the object's own image: "other" images only
    crop = torch.randint(0, side - fragment_size + 1, (n, num_fragments, 2), generator=generator)
    where = torch.randint(0, canvas_size - fragment_size + 1, (n, num_fragments, 2), generator=generator)

    canvases = torch.zeros(n, canvas_size, canvas_size, dtype=torch.uint8)
    offsets = torch.arange(fragment_size)
    for start in range(0, n, RENDER_CHUNK):
        part = slice(start, start + RENDER_CHUNK)
        chunk = canvases[part]
        _paste_max(chunk, images[part].unsqueeze(1), place[part].unsqueeze(1))
        if num_fragments:
            rows = crop[part, :, 1, None] + offsets  # (B, F, k)
            cols = crop[part, :, 0, None] + offsets
            fragments = images[source[part, :, None, None], rows[..., :, None], cols[..., None, :]]
            _paste_max(chunk, fragments, where[part])
    boxes = object_boxes(images) + place.repeat(1, 2)
    return canvases.unsqueeze(1), boxes


def source_digest(*tensors: torch.Tensor) -> str:
    """A digest of the source images and labels: a cache made from other files is not reused."""
    digest = hashlib.blake2b(digest_size=16)
    for tensor in tensors:
        digest.update(str((tensor.dtype, tuple(tensor.shape))).encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


class ClutteredFashionMNISTDataModule(FashionMNISTDataModule):
    """Fashion-MNIST objects on cluttered canvases (module docstring); the IDX files are found and read as
    :class:`FashionMNISTDataModule` finds and reads them, and everything after that (splits, label noise, subsets,
    normalisation by the training split's mean/std, resumable and GPU-resident loaders) is the same.

    ``image_size`` must equal ``canvas_size`` (null adopts it). ``boxes(split)`` gives each item's object box.
    """

    @dataclasses.dataclass(kw_only=True)
    class Options(FashionMNISTDataModule.Options):
        image_size: int | None = None  # must equal canvas_size; null adopts it
        crop_padding: int = 0  # training crops move the object off its box (the box is not used for training)
        flip: bool = False  # mirrors the canvas and so the object's box
        canvas_size: int = 60
        num_fragments: int = 8
        fragment_size: int = 12
        clutter_seed: int = 0

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.canvas_size < OBJECT_SIZE:
                raise ValueError(f"canvas_size must be >= {OBJECT_SIZE} (the object's side), got {self.canvas_size}")
            if self.num_fragments < 0:
                raise ValueError(f"num_fragments must be >= 0 (0: no clutter), got {self.num_fragments}")
            if not 1 <= self.fragment_size <= OBJECT_SIZE:
                raise ValueError(
                    f"fragment_size must be in [1, {OBJECT_SIZE}] (crops of {OBJECT_SIZE}x{OBJECT_SIZE} images), "
                    f"got {self.fragment_size}"
                )

    fixed = ("num_classes", "in_chans")
    dataset_name = "cluttered Fashion-MNIST"

    @classmethod
    def native_image_size(cls, options: Mapping[str, Any]) -> int:
        """The canvas side: canvases are not resized."""
        return int(options.get("canvas_size") or cls.Options.canvas_size)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._check_config("image_size", self.hparams.canvas_size, "the canvas side, data.canvas_size")
        self.pool_boxes: torch.Tensor | None = None  # (N, 4) of the training pool, set by load_splits
        self.test_boxes: torch.Tensor | None = None

    def cache_path(self, digest: str) -> Path:
        """The cache file of these generation options and of the source files with ``digest``."""
        hp = self.hparams
        name = (
            f"canvas{hp.canvas_size}_fragments{hp.num_fragments}x{hp.fragment_size}_seed{hp.clutter_seed}"
            f"_v{FORMAT_VERSION}_{digest}.pt"
        )
        return Path(self.root) / CACHE_DIR / name

    def _generation(self, digest: str) -> dict[str, Any]:
        """What the cache records about how it was made; a cache with anything else is not used."""
        hp = self.hparams
        options = ("canvas_size", "num_fragments", "fragment_size", "clutter_seed")
        return {"format_version": FORMAT_VERSION, "source": digest, **{key: hp[key] for key in options}}

    def load_splits(self) -> tuple[Dataset, Dataset, list[str]]:
        train, test, class_names = super().load_splits()
        sources = {"train": train, "test": test}
        splits = self._cached_canvases(sources)
        self.pool_boxes, self.test_boxes = (splits[split]["boxes"] for split in SPLITS)
        return (
            *(TensorImageDataset(splits[split]["images"], sources[split].labels) for split in SPLITS),
            class_names,
        )

    def _generate(self, sources: dict[str, TensorImageDataset]) -> dict[str, dict[str, torch.Tensor]]:
        hp = self.hparams
        started = time.perf_counter()
        splits = {}
        for split, dataset in sources.items():
            images, boxes = make_canvases(
                dataset.images.squeeze(1),
                canvas_size=hp.canvas_size,
                num_fragments=hp.num_fragments,
                fragment_size=hp.fragment_size,
                generator=clutter_generator(hp.clutter_seed, split),
            )
            splits[split] = {"images": images, "boxes": boxes, "digest": source_digest(images, boxes)}
        log.info(
            "generated %s cluttered canvases of %dx%d in %.1f s",
            " + ".join(str(len(s)) for s in sources.values()),
            hp.canvas_size,
            hp.canvas_size,
            time.perf_counter() - started,
        )
        return splits

    def _read_cache(
        self, path: Path, generation: dict[str, Any], sources: dict[str, TensorImageDataset]
    ) -> dict[str, dict[str, torch.Tensor]]:
        """The cached splits; a ValueError says why the file cannot be used."""
        try:
            cached = torch.load(path, weights_only=True, map_location="cpu")
        except Exception as err:  # a truncated or foreign file raises anything from zipfile to unpickling errors
            raise ValueError(f"unreadable ({type(err).__name__}: {err})") from err
        if not isinstance(cached, dict) or cached.get("generation") != generation:
            raise ValueError(f"made with other options than {generation}")
        size = self.hparams.canvas_size
        for split, dataset in sources.items():
            entry = cached.get(split)
            if not isinstance(entry, dict) or set(entry) != {"images", "boxes", "digest"}:
                raise ValueError(f"no {split} split")
            images, boxes, n = entry["images"], entry["boxes"], len(dataset)
            if images.dtype != torch.uint8 or images.shape != (n, 1, size, size) or boxes.shape != (n, 4):
                raise ValueError(f"{split} images {tuple(images.shape)} or boxes {tuple(boxes.shape)} do not fit")
            if source_digest(images, boxes) != entry["digest"]:
                raise ValueError(f"the {split} canvases are damaged (their digest differs from the recorded one)")
        return {split: cached[split] for split in sources}

    def _cached_canvases(self, sources: dict[str, TensorImageDataset]) -> dict[str, dict[str, torch.Tensor]]:
        """The canvases from the cache, generated and cached first when it is missing or unusable. A lock makes
        concurrent processes (DDP ranks) generate once; an unwritable root generates in memory, with a warning."""
        digest = source_digest(*(t for d in sources.values() for t in (d.images, d.labels)))
        generation = self._generation(digest)
        path = self.cache_path(digest)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(path.with_suffix(".lock"))
            lock.acquire()
        except OSError as err:
            log.warning("cannot cache cluttered canvases in %s (%s): generating them in memory", path.parent, err)
            return self._generate(sources)
        try:
            if path.is_file():
                try:
                    return self._read_cache(path, generation, sources)
                except ValueError as err:
                    log.warning("cluttered-canvas cache %s is not usable (%s): generating it again", path, err)
            splits = self._generate(sources)
            self._write_cache(path, {"generation": generation, **splits})
            return splits
        finally:
            lock.release()

    @staticmethod
    def _write_cache(path: Path, content: dict[str, Any]) -> None:
        """Write atomically (a temporary file in the same folder, then a rename): readers never see half a file."""
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save(content, file)
                file.flush()
                os.fsync(file.fileno())
            os.chmod(temporary, 0o644)  # mkstemp's 0600 would keep the cache from other users of the data root
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def boxes(self, split: str) -> torch.Tensor:
        """``(len(split set), 4)`` int64 object boxes ``(x0, y0, x1, y1)`` (canvas pixels, ends exclusive) of the
        items of ``split`` (``train``, ``val`` or ``test``), in the order of ``<split>_set``; after ``setup()``."""
        subsets = {"train": self.train_set, "val": self.val_set, "test": self.test_set}
        if split not in subsets:
            raise ValueError(f"split must be one of {list(subsets)}, got {split!r}")
        subset = subsets[split]
        if subset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before asking for boxes")
        boxes = self.test_boxes if split == "test" else self.pool_boxes
        return boxes[torch.as_tensor(subset.indices, dtype=torch.long)]
