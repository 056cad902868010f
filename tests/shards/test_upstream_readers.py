"""Our shards read by independent readers: upstream webdataset and a DALI CPU-only pipeline."""

import json

import numpy as np
import pytest

from medshard.shards.reader import open_dataset
from tests.conftest import CLASSES, ingest, make_image_table


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("upstream")
    table = make_image_table(root / "raw", kind="png16-gray", n=20, groups=20)
    ingest(
        table, root / "ds", label_col="stage", classes=CLASSES, val_fraction=0.0, shard_samples=6
    )
    ds = open_dataset(root / "ds")
    expected = {r["key"]: r["label"] for r in ds.manifest.to_pylist()}
    return ds, expected


def test_upstream_webdataset_reads_the_same_keys_and_labels(dataset):
    import webdataset as wds

    ds, expected = dataset
    urls = [str(p) for p in ds.shard_paths("train")]
    got = {}
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        got[sample["__key__"]] = int(sample["cls"])
        assert set(sample) >= {"image.png", "cls", "json"}
    assert got == expected


def test_dali_cpu_pipeline_reads_the_same_keys_labels_and_16bit_pixels(dataset):
    dali = pytest.importorskip("nvidia.dali", reason="DALI is installed on Linux only")
    from nvidia.dali import fn, types

    ds, expected = dataset

    @dali.pipeline_def(batch_size=4, num_threads=1, device_id=None)
    def pipeline():
        image, cls, meta = fn.readers.webdataset(
            paths=[str(p) for p in ds.shard_paths("train")],
            index_paths=[str(p) for p in ds.index_paths("train")],
            ext=["image.png", "cls", "json"],
            missing_component_behavior="error",
            name="reader",
        )
        return (
            fn.decoders.image(image, device="cpu", output_type=types.ANY_DATA, dtype=types.UINT16),
            cls,
            meta,
        )

    pipe = pipeline()
    pipe.build()
    assert pipe.epoch_size("reader") == len(expected)
    got, pixels = {}, {}
    while len(got) < len(expected):
        images, classes, metas = pipe.run()
        for i in range(len(metas)):
            key = json.loads(bytes(np.array(metas[i])))["key"]
            got[key] = int(bytes(np.array(classes[i])))
            pixels[key] = np.array(images[i])
    assert got == expected
    by_key = {s["__key__"]: s for s in ds.samples("train")}
    from medshard.codecs import decode_image

    for key, array in pixels.items():
        assert array.dtype == np.uint16
        assert np.array_equal(array[..., 0], decode_image(by_key[key]["image.png"], "png"))
