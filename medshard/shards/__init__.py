"""The on-disk format: layout, card, manifest, tar shards, reading and verification.

This layer reads and writes bytes; it never decodes or augments, and imports no other
medshard layer.
"""

from medshard.shards.card import (
    ChannelStats,
    DatasetCard,
    ShardInfo,
    SplitCounts,
    read_card,
    write_card,
)
from medshard.shards.layout import FORMAT_VERSION, READABLE_VERSIONS
from medshard.shards.manifest import read_manifest, read_rejected, write_manifest, write_rejected
from medshard.shards.reader import Dataset, iter_tar_samples, open_dataset
from medshard.shards.tar_writer import TarShardWriter
from medshard.shards.verify import VerifyReport, verify_dataset

__all__ = [
    "FORMAT_VERSION",
    "READABLE_VERSIONS",
    "ChannelStats",
    "Dataset",
    "DatasetCard",
    "ShardInfo",
    "SplitCounts",
    "TarShardWriter",
    "VerifyReport",
    "iter_tar_samples",
    "open_dataset",
    "read_card",
    "read_manifest",
    "read_rejected",
    "verify_dataset",
    "write_card",
    "write_manifest",
    "write_rejected",
]
