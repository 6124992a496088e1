"""What every metadata backend raises in its own words' place, so that callers and the contract suite name no
backend."""


class Conflict(Exception):
    """A write broke a uniqueness or reference constraint (a duplicate id, an id of a row that does not exist):
    a caller's bug, never a client's error (a 5xx). The backend's own exception is its __cause__."""
