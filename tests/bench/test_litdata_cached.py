"""LitData's optimize + StreamingDataset as the fomo-mri benchmark configures them."""

import csv
import json
import multiprocessing

import pytest
import torch
from monai.transforms import Compose

from medshard.bench.baselines.cached import monai_transforms
from medshard.bench.baselines.litdata_cached import (
    litdata_dataset,
    litdata_loader,
    litdata_prepare,
)
from medshard.loaders.augment import Augment3D
from medshard.synth.volumes import synth_fomo_mri

MODALITIES = ("flair", "dwi", "adc")
AUGMENT = Augment3D(flip_axes=(0, 1, 2), rot90_xy=True, gamma=(0.7, 1.5), noise_std=0.1)
SHAPE = (20, 24, 16)


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    root = tmp_path_factory.mktemp("litdata")
    table = synth_fomo_mri(root, n=3, shape=SHAPE)
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [{k: str(root / r[k]) for k in (*MODALITIES, "seg")} for r in rows]


@pytest.mark.parametrize("augment", [AUGMENT, None], ids=["augmented", "plain"])
def test_batches_hold_the_patches_cut_from_one_volume(items, tmp_path, augment):
    chains = monai_transforms(MODALITIES, (8, 8, 8), 2, augment)
    litdata_prepare(items, chains, tmp_path / "chunks", workers=1)
    index = json.loads((tmp_path / "chunks" / "index.json").read_text())
    formats = index["config"]["data_format"]
    assert "pickle" not in formats  # LitData's own array serializers, never pickle
    assert sum(chunk["chunk_size"] for chunk in index["chunks"]) == len(items)

    batches = list(litdata_loader(litdata_dataset(tmp_path / "chunks", chains), workers=0))
    assert len(batches) == len(items)
    for batch in batches:
        assert batch["image"].shape == (2, 3, 8, 8, 8) and batch["image"].dtype == torch.float32
        assert batch["seg"].shape == (2, 1, 8, 8, 8) and batch["seg"].dtype == torch.uint8
        assert not any(key.endswith("_indices") for key in batch)  # never collated


def test_volumes_round_trip_through_the_chunks(items, tmp_path):
    # the cached part equals MONAI's own deterministic chain on the same files
    chains = monai_transforms(MODALITIES, (8, 8, 8), 2, None)
    litdata_prepare(items, chains, tmp_path / "chunks", workers=1)
    identity = (chains[0], Compose([]))
    stored = list(litdata_dataset(tmp_path / "chunks", identity, shuffle=False))
    expected = [chains[0](item) for item in items]
    assert len(stored) == len(expected)
    for ours, theirs in zip(stored, expected):
        assert ours["image"].shape == (3, *SHAPE)
        torch.testing.assert_close(ours["image"], torch.as_tensor(theirs["image"]))
        torch.testing.assert_close(ours["seg"], torch.as_tensor(theirs["seg"]))


def test_two_workers_give_every_volume_once_per_epoch(items, tmp_path):
    chains = monai_transforms(MODALITIES, (8, 8, 8), 2, None)
    litdata_prepare(items, chains, tmp_path / "chunks", workers=2)
    loader = litdata_loader(litdata_dataset(tmp_path / "chunks", chains), workers=2)
    for _ in range(2):  # persistent workers: the second epoch too
        batches = list(loader)
        assert len(batches) == len(items)


def test_preparation_keeps_the_start_method_of_later_dataloaders(items, tmp_path):
    before = multiprocessing.get_start_method(allow_none=True)
    litdata_prepare(items, monai_transforms(MODALITIES, (8, 8, 8), 2, None), tmp_path / "c")
    assert multiprocessing.get_start_method(allow_none=True) == before


def test_a_volume_that_fails_is_refused_not_left_out(items, tmp_path):
    broken = [*items, {**items[0], "seg": str(tmp_path / "missing_seg.nii.gz")}]
    chains = monai_transforms(MODALITIES, (8, 8, 8), 2, None)
    # LitData raises what its worker met; where a worker dies before it can, the volumes
    # written are counted (LitDataPrepareError)
    with pytest.raises(RuntimeError, match=rf"missing_seg|of {len(broken)} volumes"):
        litdata_prepare(broken, chains, tmp_path / "chunks", workers=1)
