"""data=hf: Hugging Face datasets saved to disk, as parquet files, or from the Hub (load_dataset replaced here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from files import hf_dataset, write_parquet
from helpers import compose_config

from datamodules.hf import HFDataModule
from datamodules.optional import MissingExtraError

datasets = pytest.importorskip("datasets", reason='data=hf needs the hf extra: pip install -e ".[hf]"')

FAST = dict(image_size=32, batch_size=8, num_workers=0)


def hf_dm(tmp_path: Path, **kw: object) -> HFDataModule:
    dm = HFDataModule(root=str(tmp_path / "cache"), **{**FAST, **kw})
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hf") / "saved"
    hf_dataset(["cat", "dog", "fox"], 30, 9).save_to_disk(str(folder))
    return folder


def test_saved_to_disk_gives_splits_classes_batches_and_label_noise(saved: Path, tmp_path: Path) -> None:
    dm = hf_dm(tmp_path, path=str(saved), val_fraction=0.2)
    assert dm.class_names == ["cat", "dog", "fox"] and dm.num_classes == 3
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (24, 6, 9)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32 and labels.max() < 3
    assert dm.mean == (0.485, 0.456, 0.406)
    source = datasets.load_from_disk(str(saved))
    assert (
        dm.train_set.dataset[4][0]
        == source["train"].cast_column("image", datasets.Image(decode=False))[4]["image"]["bytes"]
    )

    noisy = hf_dm(tmp_path, path=str(saved), val_fraction=0.2, label_noise=0.5, max_train_samples=16, in_chans=1)
    assert len(noisy.train_set) == 16 and 0 < noisy.label_noise_realised < 1
    clean = torch.tensor([label for _, label in (dm.train_set.dataset[i] for i in noisy.train_set.indices)])
    relabeled = torch.tensor([noisy.train_set.dataset[i][1] for i in noisy.train_set.indices])
    assert (clean != relabeled).float().mean() == pytest.approx(noisy.label_noise_realised)
    assert noisy.val_set.dataset is not noisy.train_set.dataset  # validation keeps the clean labels
    assert noisy.train_set[0][0].shape == (1, 32, 32)
    with pytest.raises(ValueError, match=r"num_classes=10 .*data\.num_classes=3"):
        hf_dm(tmp_path, path=str(saved), num_classes=10)


def test_parquet_folder_file_and_string_labels(tmp_path: Path) -> None:
    dataset = hf_dataset(["a", "b"], 20, 6)
    write_parquet(dataset, tmp_path / "parquet")
    from_folder = hf_dm(tmp_path, path=str(tmp_path / "parquet"))
    assert from_folder.class_names == ["a", "b"] and len(from_folder.test_set) == 6

    single = hf_dm(tmp_path, path=str(tmp_path / "parquet" / "train-*.parquet"), test_split=None, test_fraction=0.25)
    assert (len(single.train_set) + len(single.val_set), len(single.test_set)) == (15, 5)

    named = (
        dataset["train"]
        .cast_column("label", datasets.Value("int64"))
        .map(lambda row: {"species": ["owl", "emu"][row["label"]]})
    )
    named.to_parquet(str(tmp_path / "named.parquet"))
    strings = hf_dm(tmp_path, path=str(tmp_path / "named.parquet"), test_split=None, label_column="species")
    assert strings.class_names == ["emu", "owl"]
    _, labels = next(iter(strings.val_dataloader()))
    assert set(labels.tolist()) <= {0, 1}


def test_hub_name_goes_through_load_dataset(monkeypatch: pytest.MonkeyPatch, saved: Path, tmp_path: Path) -> None:
    calls = []

    def load_dataset(name: str, subset: str | None, **kw: object) -> datasets.DatasetDict:
        calls.append((name, subset, kw))
        return datasets.load_from_disk(str(saved))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    dm = HFDataModule(root=str(tmp_path / "cache"), name="someone/pets", revision="v1", **FAST)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.class_names == ["cat", "dog", "fox"]
    assert calls[0] == ("someone/pets", None, {"revision": "v1", "cache_dir": str(tmp_path / "cache")})

    def offline(*args: object, **kw: object) -> None:
        raise ConnectionError("no route to host")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(FileNotFoundError, match=r"someone/pets .*save_to_disk\(DIR\).*data\.path=DIR"):
        HFDataModule(root=str(tmp_path), name="someone/pets").prepare_data()


def test_errors_name_the_option_to_change(saved: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one source"):
        HFDataModule(root="")
    with pytest.raises(ValueError, match="exactly one source"):
        HFDataModule(root="", name="a/b", path=str(saved))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hf_dm(tmp_path, path=str(tmp_path / "nothing"))
    with pytest.raises(ValueError, match=r"no split 'validation'; its splits: \['test', 'train'\]"):
        hf_dm(tmp_path, path=str(saved), test_split="validation")
    with pytest.raises(ValueError, match=r"no column 'img' \(data\.image_column\)"):
        hf_dm(tmp_path, path=str(saved), image_column="img")
    with pytest.raises(ValueError, match="not an Image feature"):
        hf_dm(tmp_path, path=str(saved), image_column="label")
    unlabelled = hf_dataset(["a", "b"], 8, 4)
    unlabelled["test"] = unlabelled["test"].cast_column("label", datasets.Value("int64")).map(lambda _: {"label": -1})
    unlabelled.save_to_disk(str(tmp_path / "unlabelled"))
    with pytest.raises(ValueError, match="4 unlabelled examples"):
        hf_dm(tmp_path, path=str(tmp_path / "unlabelled"))


def test_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(MissingExtraError, match=r'data=hf needs .*datasets.*pip install -e "\.\[hf\]"'):
        HFDataModule(root="", name="a/b")


def test_yaml_keys_are_the_options(saved: Path, tmp_path: Path) -> None:
    import hydra

    cfg = compose_config("train", ["data=hf", f"data.path={saved}"], tmp_path)
    dm = hydra.utils.instantiate(cfg.data)
    assert type(dm).option_names() == set(cfg.data) - {"_target_"} == set(dm.hparams) | {"num_classes"}
    assert all(isinstance(value, (str, int, float, bool, type(None))) for value in dm.hparams.values())
    assert dm.root == str(tmp_path / "data" / "huggingface")
