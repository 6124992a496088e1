"""Every blob key Inhouse forms, in one place: one prefix per kind of bytes, and who may delete them.

Keys are ours, never derived from a client's filename. The storage layer only keeps keys as data (a checkpoint's
or a model's `artifact_key`); it never forms one. The sweeper (`services/maintenance.py`) walks these prefixes.
"""

from __future__ import annotations

FILES = "files"  # a File's bytes; its row is in the files table (bytes first, row second)
PARTS = "parts"  # an Upload part's bytes, until the Upload completes or expires
CHECKPOINTS = "checkpoints"  # a fine-tuning checkpoint's weights; checkpoint and model rows name them
BATCHES = "batches"  # a batch chunk's output or error lines, until the batch is finished
IMAGES = "images"  # an image behind a signed URL, until the URL's TTL has passed


def file_blob_key(file_id: str) -> str:
    return f"{FILES}/{file_id}"


def part_blob_key(part_id: str) -> str:
    return f"{PARTS}/{part_id}"


def id_in_key(key: str) -> str:
    """The id a `files/` or `parts/` key was made from."""
    return key.split("/", 1)[1]


def checkpoint_key(ckpt_id: str) -> str:
    return f"{CHECKPOINTS}/{ckpt_id}"


def chunk_key(batch_id: str, index: int, kind: str) -> str:
    """Blob of one chunk's output ("out") or error ("err") lines."""
    return f"{BATCHES}/{batch_id}-{index:06d}-{kind}"


def chunk_batch_id(key: str) -> str:
    """The batch a chunk key (from chunk_key) belongs to."""
    return key.removeprefix(f"{BATCHES}/").rsplit("-", 2)[0]


def image_key(name: str) -> str:
    """Blob of the image served at /v1/images/files/<name>.<format>."""
    return f"{IMAGES}/{name}"
