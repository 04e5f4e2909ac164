"""What every job shares: Beam options (``options``), shared transforms (``transforms``), file helpers
(``files``), URL-aware file operations (fsspec for object stores) for local paths and object stores
(``storage``; which filesystem serves a URL, under which options, and a store's errors: ``object_store``),
the seed's Parquet schema (``schema``), Parquet inputs (``parquet``) and the 64-bit hashing the jobs and
the trainer share (``hashing``).

Nothing is imported here, so that a module without Beam (``files``, ``schema``, ``hashing``) can be used
without it.
"""
