"""The metadata store's per-resource contracts, one Protocol per module; the rules every method keeps:

- A thing that is not there is an answer (None, False, an empty page), never an exception. What a method raises is
  only what its docstring names, `storage.errors.Conflict` for a caller's bug that breaks a constraint (a duplicate
  id, an id of a project that does not exist), or the backend's own error (sqlite3.Error, psycopg.Error) for a
  broken database: those are 5xx, not client errors.
- Every write is one transaction: all of it or none of it, whatever the process does next.
- A row about bytes is written only after the bytes are durable in the blob store ("bytes before rows"), and a
  deleted row's bytes go after it; the store never touches blobs, it hands their keys back where that is needed.
- Reads and writes on a project's object are scoped by its project id; `_any` methods are for workers and
  sweepers, which act for no caller.
- Lease-guarded writes (jobs, batches) write nothing once the lease holder lost the row: cancelled and finished
  by another, or claimed again after its lease ran out. Expiry is strict: a lease that ends at t still holds at t.
"""
