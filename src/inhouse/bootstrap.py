"""The one place that picks concrete backends from settings (sqlite: / postgresql:, file: / s3:)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from inhouse.config import Settings
from inhouse.services.container import Services
from inhouse.storage.base import BlobStore, MetadataStore
from inhouse.storage.local_blobs import LocalBlobStore
from inhouse.storage.sqlite import SqliteMetadataStore, sqlite_path


def build_metadata_store(url: str) -> MetadataStore:
    if url.startswith("sqlite:///"):
        return SqliteMetadataStore(sqlite_path(url))
    scheme = url.split(":", 1)[0]
    if scheme in ("postgresql", "postgres"):
        from inhouse.storage.postgres import PostgresMetadataStore  # loads psycopg (the `postgres` extra) only here

        return PostgresMetadataStore(url)
    raise ValueError(f"unsupported database_url scheme {scheme!r}: this build supports sqlite:///PATH and "
                     "postgresql://USER@HOST:PORT/DB")


def build_blob_store(url: str) -> BlobStore:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalBlobStore(Path(parsed.path))
    if parsed.scheme == "s3":
        from inhouse.storage.s3_blobs import S3BlobStore  # loads boto3 (the `s3` extra) only when opened

        return S3BlobStore.from_url(url)
    raise ValueError(f"unsupported blob_url scheme {parsed.scheme!r}: this build supports file:///PATH and "
                     "s3://BUCKET[/PREFIX][?endpoint=URL&region=NAME]")


def build_services(settings: Settings) -> Services:
    return Services.build(settings, build_metadata_store(settings.database_url), build_blob_store(settings.blob_url))
