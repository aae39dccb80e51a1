"""data=streaming and its converter: shards written from a JPEG tree, Fashion-MNIST files and an HF dataset,
read locally and through a cached remote URL, and the training loader resuming mid-epoch."""

from __future__ import annotations

import io
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from files import hf_dataset, truncate, write_idx_gz, write_image, write_jpeg_tree
from helpers import compose_config
from PIL import Image

from datamodules.errors import DamagedDataError
from datamodules.folder import ImageFolderDataModule
from datamodules.optional import MissingExtraError
from datamodules.shards import main, write_shards
from datamodules.streaming import StreamingDataModule

litdata = pytest.importorskip(
    "litdata", reason='data=streaming needs the streaming extra: pip install -e ".[streaming]"'
)

FAST = dict(image_size=32, batch_size=8, num_workers=0)


def streaming_dm(input_dir: Path | str, root: Path, **kw: object) -> StreamingDataModule:
    dm = StreamingDataModule(input_dir=str(input_dir), root=str(root), **{**FAST, **kw})
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def tree_shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A JPEG tree (train/ and test/) and its shards, written by two converter processes."""
    tmp = tmp_path_factory.mktemp("shards")
    write_jpeg_tree(tmp / "tree" / "train", ["ant", "bee", "cow"], per_class=12)
    write_jpeg_tree(tmp / "tree" / "test", ["ant", "bee", "cow"], per_class=3, seed=1)
    source = ImageFolderDataModule(root=str(tmp / "tree"), image_size=32)
    assert write_shards(source, tmp / "out", workers=2, chunk_bytes="8KB", verbose=False) == {"train": 36, "test": 9}
    return tmp / "tree", tmp / "out"


def test_converter_keeps_the_files_and_records_classes_and_labels(tree_shards: tuple[Path, Path]) -> None:
    tree, out = tree_shards
    index = json.loads((out / "train" / "index.json").read_text())
    assert len(index["chunks"]) > 2 and index["resattn"]["class_names"] == ["ant", "bee", "cow"]
    labels = index["resattn"]["labels"]
    assert sorted(labels) == [0] * 12 + [1] * 12 + [2] * 12 and labels != sorted(labels)  # shuffled order
    shards = litdata.StreamingDataset(str(out / "train"))
    files = sorted((tree / "train").glob("*/*.jpg"))
    for position in range(36):
        item = shards[position]
        assert item["index"] == position and item["label"] == labels[position]
        assert item["image"] == files[item["source"]].read_bytes()  # the JPEG's own bytes
    test = litdata.StreamingDataset(str(out / "test"))
    assert [test[i]["source"] for i in range(9)] == list(range(9))  # the test set keeps its order


def test_streaming_splits_batches_and_label_noise(tree_shards: tuple[Path, Path], tmp_path: Path) -> None:
    _, out = tree_shards
    dm = streaming_dm(out, tmp_path, val_fraction=0.25)
    assert dm.class_names == ["ant", "bee", "cow"] and dm.num_classes == 3
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (27, 9, 9)
    loader = dm.train_dataloader()
    assert type(loader).__name__ == "StreamingDataLoader" and len(loader) == 3
    batches = list(loader)
    assert all(images.shape == (8, 3, 32, 32) for images, _ in batches)
    val_images, _ = next(iter(dm.val_dataloader()))
    assert val_images.shape == (8, 3, 32, 32)

    noisy = streaming_dm(out, tmp_path, val_fraction=0.25, label_noise=0.6, max_train_samples=16)
    assert len(noisy.train_set) == 16 and len(noisy.train_dataloader()) == 2
    noisy_labels = torch.cat([labels for _, labels in noisy.train_dataloader()])
    clean = dm.train_set.dataset.labels
    expected = noisy.train_set.dataset.labels
    assert not torch.equal(expected, clean) and sorted(noisy_labels.tolist()) != sorted(clean[:16].tolist())
    assert sorted(noisy_labels.tolist()) == sorted(expected[noisy.train_set.indices].tolist())


def test_remote_url_is_cached_under_root(tree_shards: tuple[Path, Path], tmp_path: Path) -> None:
    """litdata's ``local:`` scheme takes the remote code path of training (index and chunks copied into the
    cache). Evaluation reads single items, which litdata fetches by byte range from a real object store only."""
    _, out = tree_shards
    local = streaming_dm(out, tmp_path / "unused")
    remote = streaming_dm(f"local:{out}", tmp_path / "cache")
    assert remote.class_names == local.class_names and remote.val_set.indices == local.val_set.indices
    for (a, la), (b, lb) in zip(local.train_dataloader(), remote.train_dataloader(), strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb)
    assert len(list((tmp_path / "cache").rglob("chunk-*.bin"))) > 2 and not (tmp_path / "unused").exists()


@pytest.mark.parametrize("workers", [0, 2])
def test_training_loader_resumes_mid_epoch_with_the_same_batches(
    tree_shards: tuple[Path, Path], tmp_path: Path, workers: int
) -> None:
    _, out = tree_shards
    whole = streaming_dm(out, tmp_path, num_workers=workers).train_dataloader()
    reference = [list(whole), list(whole)]  # two epochs
    assert len(reference[0]) == 4 and not torch.equal(reference[0][0][0], reference[1][0][0])

    interrupted = streaming_dm(out, tmp_path, num_workers=workers).train_dataloader()
    iterator = iter(interrupted)
    head = [next(iterator) for _ in range(3)]
    state = interrupted.state_dict()
    del iterator
    torch.manual_seed(1234)  # a new process: other global random state
    resumed = streaming_dm(out, tmp_path, num_workers=workers).train_dataloader()
    resumed.load_state_dict(state)
    tail = list(resumed)
    assert len(tail) == 1
    for epoch, batches in enumerate((head + tail, list(resumed))):
        for (images, labels), (want_images, want_labels) in zip(batches, reference[epoch], strict=True):
            assert torch.equal(images, want_images) and torch.equal(labels, want_labels)


def test_converter_command_from_fashion_mnist_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    images = {"train": rng.integers(0, 256, (30, 28, 28)), "t10k": rng.integers(0, 256, (10, 28, 28))}
    for split, pixels in images.items():
        write_idx_gz(tmp_path / f"{split}-images-idx3-ubyte.gz", pixels)
        write_idx_gz(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.arange(len(pixels)) % 10)
    overrides = ["data=fashion_mnist", f"data.root={tmp_path}", f"data.system_dir={tmp_path / 'none'}"]
    assert main([str(tmp_path / "out"), *overrides, "--workers", "1"]) == {"train": 30, "test": 10}
    printed = capsys.readouterr().out
    assert f"data=streaming data.input_dir={tmp_path / 'out'} data.in_chans=1 data.image_size=28" in printed
    shards = litdata.StreamingDataset(str(tmp_path / "out" / "train"))
    item = shards[5]
    decoded = np.asarray(Image.open(io.BytesIO(item["image"])))
    assert np.array_equal(decoded, images["train"][item["source"]])  # lossless PNG
    dm = streaming_dm(tmp_path / "out", tmp_path / "cache", in_chans=1, image_size=28, model_family="cifar")
    assert dm.class_names[0] == "T-shirt/top" and next(iter(dm.train_dataloader()))[0].shape == (8, 1, 28, 28)
    with pytest.raises(SystemExit):
        main(["s3://bucket/shards", "data=fashion_mnist"])


def test_converter_from_a_hugging_face_dataset(tmp_path: Path) -> None:
    pytest.importorskip("datasets", reason='converting an HF dataset needs the hf extra: pip install -e ".[hf]"')
    from datamodules.hf import HFDataModule

    hf_dataset(["x", "y"], 10, 4).save_to_disk(str(tmp_path / "saved"))
    source = HFDataModule(root=str(tmp_path / "cache"), path=str(tmp_path / "saved"))
    write_shards(source, tmp_path / "out", verbose=False)
    dm = streaming_dm(tmp_path / "out", tmp_path / "cache")
    source.setup("fit")
    assert dm.class_names == ["x", "y"]
    assert [dm.test_set.dataset[i][0] for i in range(4)] == [source.test_set.dataset[i][0] for i in range(4)]


def test_missing_or_foreign_shards_and_missing_extra(
    tree_shards: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(FileNotFoundError, match=r"no shards at .*python -m datamodules\.shards"):
        streaming_dm(tmp_path / "nothing", tmp_path)
    litdata.optimize(
        fn=lambda i: {"image": b"x", "label": i},
        inputs=[0, 1],
        output_dir=str(tmp_path / "foreign" / "train"),
        chunk_bytes="1MB",
        num_workers=1,
        verbose=False,
        start_method="fork",
    )
    with pytest.raises(ValueError, match=r"not written by `python -m datamodules\.shards`"):
        streaming_dm(tmp_path / "foreign", tmp_path)
    monkeypatch.setitem(sys.modules, "litdata", None)
    with pytest.raises(MissingExtraError, match=r'data=streaming needs .*litdata.*pip install -e "\.\[streaming\]"'):
        StreamingDataModule(root="", input_dir=str(tree_shards[1]))


def test_yaml_keys_are_the_options(tree_shards: tuple[Path, Path], tmp_path: Path) -> None:
    import hydra

    cfg = compose_config("train", ["data=streaming", f"data.input_dir={tree_shards[1]}"], tmp_path)
    dm = hydra.utils.instantiate(cfg.data)
    assert type(dm).option_names() == set(cfg.data) - {"_target_"} == set(dm.hparams) | {"num_classes"}
    assert all(isinstance(value, (str, int, float, bool, type(None))) for value in dm.hparams.values())
    assert StreamingDataModule(root="", input_dir="s3://bucket/shards").input_dir == "s3://bucket/shards"


def damaged_copy(out: Path, to: Path, damage: Callable[[Path], object]) -> Path:
    """A copy of the shards ``out`` in ``to``, damaged by ``damage(copy)``."""
    shutil.copytree(out, to)
    damage(to)
    return to


def test_damaged_shards_are_named_before_training(tree_shards: tuple[Path, Path], tmp_path: Path) -> None:
    """A chunk missing or cut short, an index that is damaged or missing: one message naming the file and the
    remedy when the data are set up, not litdata's wait for a download at the step that needs it."""
    _, out = tree_shards
    remedy = "copy the shards again from where they were written, or write them again with `python -m datamodules"
    cases = {
        "missing-chunk": (lambda d: (d / "train" / "chunk-0-1.bin").unlink(), r"shard chunk .*/train/chunk-0-1.bin "),
        "cut-chunk": (lambda d: truncate(d / "test" / "chunk-0-0.bin"), r"test/chunk-0-0.bin has \d+ bytes, not the"),
        "damaged-index": (lambda d: truncate(d / "test" / "index.json"), r"the shards' index .*test/index.json is dam"),
        "missing-index": (lambda d: (d / "test" / "index.json").unlink(), r"the shards lack .*/test/index.json"),
    }
    for name, (damage, message) in cases.items():
        copy = damaged_copy(out, tmp_path / name, damage)
        with pytest.raises(DamagedDataError, match=message) as err:
            streaming_dm(copy, tmp_path / "cache")
        assert remedy in str(err.value), name


def test_a_chunk_lost_after_the_check_is_named_at_its_step(tree_shards: tuple[Path, Path], tmp_path: Path) -> None:
    _, out = tree_shards
    copy = damaged_copy(out, tmp_path / "copy", lambda d: None)
    dm = streaming_dm(copy, tmp_path / "cache")
    for chunk in (copy / "train").glob("chunk-*.bin"):
        chunk.unlink()
    expected = r"shard chunk .*/train/chunk-\d-\d+.bin is missing: copy the shards again"
    for loader in (dm.train_dataloader, dm.val_dataloader):
        with pytest.raises(DamagedDataError, match=expected):
            list(loader())


def test_an_image_damaged_before_conversion_is_named_by_its_shard_item(tmp_path: Path) -> None:
    """The converter keeps a file's bytes, so truncated JPEGs become truncated shard items: training and
    evaluation name the item and the fix (at the source, then convert again)."""
    write_jpeg_tree(tmp_path / "tree" / "train", ["ant", "bee"], per_class=8)
    write_jpeg_tree(tmp_path / "tree" / "test", ["ant", "bee"], per_class=2, seed=1)
    for path in (tmp_path / "tree").glob("*/*/img*.jpg"):
        truncate(path)
    write_shards(ImageFolderDataModule(root=str(tmp_path / "tree"), image_size=32), tmp_path / "out", verbose=False)
    dm = streaming_dm(tmp_path / "out", tmp_path / "cache", batch_size=4, val_fraction=0.25)
    expected = r"shard item \d+ of .*/out/(train|test): cannot decode an image of \d+ bytes .*write the shards again"
    for loader in (dm.train_dataloader, dm.val_dataloader, dm.test_dataloader):
        with pytest.raises(DamagedDataError, match=expected):
            list(loader())


def test_converter_suggests_the_images_own_size_and_prints_no_chatter(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A folder of 32-pixel images under data=folder (whose default size is 224): the command to train on them says
    data.image_size=32 data.model_family=cifar; litdata's processes print nothing but their progress bar."""
    for split, count in (("train", 6), ("test", 2)):
        for name in ("ant", "bee"):
            for i in range(count):
                write_image(tmp_path / "tree" / split / name / f"{i}.png", seed=i, size=(32, 32))
    main([str(tmp_path / "out"), "data=folder", f"data.root={tmp_path / 'tree'}", "--workers", "2"])
    printed = capfd.readouterr()
    assert printed.out.splitlines() == [
        f"wrote 12 training and 4 test images to {tmp_path / 'out'}. Train on them with:",
        f"  python train.py data=streaming data.input_dir={tmp_path / 'out'} data.in_chans=3 data.image_size=32 "
        "data.model_family=cifar",
    ]
    assert "Worker" not in printed.err and "lightning.ai" not in printed.err and "Progress: 100%" in printed.err
