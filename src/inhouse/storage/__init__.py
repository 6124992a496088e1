"""Persistence only: the metadata store and the blob store, behind the Protocols in `base`."""
