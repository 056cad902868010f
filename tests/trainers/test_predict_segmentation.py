"""`medshard predict` on a segmentation run: each label map overlays its NIfTI source
(shape and affine), labels the voxels the model labels, and the JSON validates."""

import jsonschema
import nibabel as nib
import numpy as np
import torch
from safetensors.torch import save_file

from medshard.shards.reader import open_dataset
from medshard.trainers.config import TrainConfig
from medshard.trainers.predict import open_run, predict
from medshard.trainers.predict_inputs import file_inputs
from tests.trainers.test_predict import SCHEMA


def sign_net(spatial_dims: int, in_channels: int, out_channels: int) -> torch.nn.Module:
    """Logits (-x, x, -inf ...) of the first channel: label 1 wherever the normalised
    intensity is above 0, that is above the card's mean."""
    return _Sign(out_channels)


class _Sign(torch.nn.Module):
    def __init__(self, classes: int):
        super().__init__()
        self.classes = classes
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = x[:, :1] * self.scale
        rest = torch.full_like(first, -1e4).expand(-1, self.classes - 2, *x.shape[2:])
        return torch.cat([-first, first, rest], dim=1)


def test_a_segmentation_label_map_overlays_its_nifti_source(real_mri, tmp_path):
    dataset, raw = real_mri
    run = tmp_path / "seg"
    config = TrainConfig.model_validate(
        dict(
            name="seg",
            dataset=str(dataset),
            task="segmentation",
            model={"name": "tests.trainers.test_predict_segmentation:sign_net"},
            loader={"patch_size": [8, 8, 8], "batch_size": 2, "val_split": "train"},
        )
    )
    (run / "best").mkdir(parents=True)
    import yaml

    (run / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    save_file({"scale": torch.ones(())}, str(run / "best/model.safetensors"))
    mean = open_dataset(dataset).card.stats.clipped_mean[0]  # what normalisation subtracts
    for source in ("anatomical.nii", "reoriented.nii", "standard.nii.gz"):
        document = predict(
            open_run(run),
            file_inputs([str(raw / source)]),
            output_dir=tmp_path / "maps",
            show=False,
        )
        jsonschema.validate(document, SCHEMA)
        record = document["records"][0]
        written, original = nib.load(record["output"]), nib.load(raw / source)
        assert written.shape == original.shape and record["shape"] == list(original.shape)
        assert np.allclose(written.affine, original.affine)
        expected = np.asarray(original.dataobj, np.float32) > mean
        if source != "standard.nii.gz":  # nibabel's tiny volume lies below the pooled mean
            assert 0 < expected.mean() < 1
        assert np.array_equal(np.asarray(written.dataobj) == 1, expected)
    whole = predict(open_run(run), _volumes(dataset), output_dir=tmp_path / "ds-maps", show=False)
    jsonschema.validate(whole, SCHEMA)
    assert {r["input"] for r in whole["records"]} == {"anatomical", "reoriented", "standard"}
    for record in whole["records"]:
        source = nib.load(
            raw / f"{record['input']}{'.nii.gz' if 'standard' in record['input'] else '.nii'}"
        )
        assert nib.load(record["output"]).shape == source.shape
        assert np.allclose(nib.load(record["output"]).affine, source.affine)
    assert 0.0 <= whole["metrics"]["test_dice"] <= 1.0


def _volumes(dataset):
    from medshard.trainers.predict_inputs import dataset_inputs

    return dataset_inputs(dataset, "train", whole_volumes=True)
