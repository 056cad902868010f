"""MONAI's cached datasets as the fomo-mri benchmark configures them."""

import csv

import pytest
import torch

from medshard.bench.baselines.cached import monai_dataset, monai_loader, monai_transforms, prepare
from medshard.loaders.augment import Augment3D
from medshard.synth.volumes import synth_fomo_mri

MODALITIES = ("flair", "dwi", "adc")
AUGMENT = Augment3D(flip_axes=(0, 1, 2), rot90_xy=True, gamma=(0.7, 1.5), noise_std=0.1)


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    root = tmp_path_factory.mktemp("monai")
    table = synth_fomo_mri(root, n=3, shape=(20, 24, 16))
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [{k: str(root / r[k]) for k in (*MODALITIES, "seg")} for r in rows]


@pytest.mark.parametrize("kind", ["persistent", "cache"])
@pytest.mark.parametrize("augment", [AUGMENT, None], ids=["augmented", "plain"])
def test_batches_hold_the_patches_cut_from_one_volume(items, tmp_path, kind, augment):
    chains = monai_transforms(MODALITIES, (8, 8, 8), 2, augment)
    dataset = monai_dataset(kind, items, chains, tmp_path / "cache")
    prepare(dataset)
    if kind == "persistent":  # the deterministic part is on disk before the first epoch
        assert len(list((tmp_path / "cache").glob("*.pt"))) == len(items)
    batches = list(monai_loader(dataset, workers=0))
    assert len(batches) == len(items)
    for batch in batches:
        assert batch["image"].shape == (2, 3, 8, 8, 8) and batch["image"].dtype == torch.float32
        assert batch["seg"].dtype == torch.uint8  # masks in the engine's type
        assert not any(key.endswith("_indices") for key in batch)  # never collated
