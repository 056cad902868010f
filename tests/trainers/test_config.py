"""Configs: bad ones are refused with a clear sentence before training starts; the
loader section is the loader's own options, and they reach the loader."""

from types import SimpleNamespace
from typing import get_args

import pytest
import torch

from medshard.loaders import LoaderOptions
from medshard.loaders.sources import PadMode
from medshard.shards.reader import open_dataset
from medshard.trainers.config import ConfigError, LoaderConfig, load_config
from medshard.trainers.kfold import aggregate_folds
from medshard.trainers.loop import train
from medshard.trainers.setup import build_loaders
from tests.conftest import CLASSES, ingest, make_image_table

PAD_MODES = get_args(PadMode)


def write(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_unknown_key_is_refused_naming_it(tmp_path):
    path = write(
        tmp_path, "name: x\ndataset: d\ntask: classification\nmodel: {name: resnet18, depth: 3}\n"
    )
    with pytest.raises(ConfigError, match=r"c\.yaml: model\.depth: unknown key"):
        load_config(path)


def test_wrong_type_is_refused(tmp_path):
    path = write(tmp_path, "name: x\ndataset: d\ntask: classification\nepochs: many\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: epochs: Input should be a valid integer"):
        load_config(path)


def test_unknown_task_and_bad_override(tmp_path):
    path = write(tmp_path, "name: x\ndataset: d\ntask: detection\n")
    with pytest.raises(ConfigError, match=r"task: Input should be 'classification'"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"override 'epochs' is not of the form key=value"):
        load_config(write(tmp_path, "name: x\ndataset: d\ntask: regression\n"), ["epochs"])


def test_overrides_reach_nested_fields(tmp_path):
    path = write(tmp_path, "name: x\ndataset: d\ntask: regression\n")
    config = load_config(
        path, ["loader.batch_size=3", "loader.patch_size=[8,8,8]", "augment.flip_h=true"]
    )
    assert config.loader.batch_size == 3 and config.loader.patch_size == (8, 8, 8)
    assert config.augment == {"flip_h": True}


@pytest.fixture
def images(tmp_path):
    table = make_image_table(tmp_path / "raw", n=12)
    ingest(table, tmp_path / "ds", label_col="stage", classes=CLASSES)
    return tmp_path / "ds"


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ("segmentation", "needs masks, and .* has none"),
        ("multilabel", "task 'multilabel' does not fit .*: its labels are for classification"),
        ("regression", "task 'regression' does not fit"),
        ("reconstruction", "trains on clips or volumes, not 2D images"),
    ],
)
def test_a_task_that_does_not_fit_the_dataset(images, tmp_path, task, message):
    path = write(tmp_path, f"name: x\ndataset: {images}\ntask: {task}\noutput_dir: {tmp_path}\n")
    with pytest.raises(ConfigError, match=message):
        train(load_config(path), quiet=True)
    assert not (tmp_path / "x").exists()


def test_fold_aggregation_gives_mean_std_and_t_interval():
    summary = aggregate_folds(
        [{"epoch": 3, "val_accuracy": v, "val_f1": [0.1]} for v in (0.7, 0.8, 0.9)]
    )
    accuracy = summary["val_accuracy"]
    assert accuracy["mean"] == pytest.approx(0.8) and accuracy["std"] == pytest.approx(0.1)
    low, high = accuracy["ci95"]
    assert high - 0.8 == pytest.approx(4.302653 * 0.1 / 3**0.5, rel=1e-5)  # t(0.975, 2)
    assert (
        low == pytest.approx(0.8 - (high - 0.8))
        and "val_f1" not in summary
        and "epoch" not in summary
    )


def test_the_loader_section_is_the_loaders_own_options():
    assert issubclass(LoaderConfig, LoaderOptions)
    assert set(LoaderConfig.model_fields) - set(LoaderOptions.model_fields) == {
        "train_split",
        "val_split",
    }


@pytest.fixture(scope="module")
def real_mri(tmp_path_factory):
    """nibabel's real MRI volumes, one (7 x 5 x 4) smaller than a 16^3 patch."""
    from medshard.ingest.nifti import NiftiIngestOptions, ingest_nifti
    from tests.real_data import real_nifti_table

    root = tmp_path_factory.mktemp("mri")
    table = real_nifti_table(root / "raw")
    options = dict(modalities=("image",), mask_col="seg", key_col="subject", label_col="group")
    quiet = dict(workers=1, processes=False, quiet=True, val_fraction=0.0)
    ingest_nifti(NiftiIngestOptions(table=table, out=root / "ds", **options, **quiet))
    return root / "ds"


def _small_patch(dataset, tmp_path, mode: str) -> torch.Tensor:
    """The validation patch of the smallest volume, padded by the config's pad_mode."""
    path = write(
        tmp_path,
        f"name: x\ndataset: {dataset}\ntask: classification\naugment: {{normalize: none}}\n"
        f"loader: {{patch_size: [16, 16, 16], pad_mode: {mode}, val_split: train, "
        "num_workers: 0, backend: torch, batch_size: 1}\n",
    )
    config = load_config(path)
    place = SimpleNamespace(process_index=0, num_processes=1, device="cpu")
    train_loader, val_loader = build_loaders(config, open_dataset(dataset), place)
    assert train_loader.source.pad_mode == val_loader.source.pad_mode == mode
    (patch,) = [b["image"][0] for b in val_loader if b["key"][0].startswith("standard#")][:1]
    return patch


def test_the_configs_pad_mode_reaches_the_patches(real_mri, tmp_path):
    patches = {mode: _small_patch(real_mri, tmp_path, mode) for mode in PAD_MODES}
    assert float(patches["constant"][0, 0, 0, 0]) == 0.0
    inside = patches["constant"][:, 6:10, 6:10, 6:10]  # the volume sits in the middle
    assert float(patches["minimum"][0, 0, 0, 0]) == float(patches["minimum"].min())
    assert torch.equal(patches["reflect"][:, 6:10, 6:10, 6:10], inside)
    assert not torch.equal(patches["reflect"], patches["constant"])


def test_a_dataset_at_a_url_takes_its_cache_and_store_from_the_config(tmp_path):
    text = (
        "name: x\ndataset: s3://imaging/embryo\ntask: classification\n"
        f"cache_dir: {tmp_path / 'cache'}\ncache_limit: 50GB\nendpoint_url: http://127.0.0.1:9000\n"
    )
    config = load_config(write(tmp_path, text))
    assert config.storage() == {
        "cache_dir": tmp_path / "cache",
        "cache_limit": "50GB",
        "endpoint_url": "http://127.0.0.1:9000",
    }
    overridden = load_config(write(tmp_path, text), ["cache_limit=2GiB"])
    assert overridden.cache_limit == "2GiB"


@pytest.mark.parametrize("name", ["cache_dir", "cache_limit", "endpoint_url"])
def test_cache_and_store_options_of_a_local_dataset_are_refused(tmp_path, name):
    path = write(tmp_path, f"name: x\ndataset: d\ntask: classification\n{name}: 1GB\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"{path}: {name}: Value error, applies to a dataset at an s3:// URL; d is a directory"
    )


def test_a_cache_limit_that_is_not_a_size_is_refused(tmp_path):
    path = write(tmp_path, "name: x\ndataset: s3://b/d\ntask: classification\ncache_limit: lots\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: cache_limit: .*'lots' is not a size"):
        load_config(path)
    path = write(tmp_path, "name: x\ndataset: s3://b/d\ntask: classification\ncache_limit: yes\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: cache_limit"):  # YAML's true, not 1 byte
        load_config(path)
