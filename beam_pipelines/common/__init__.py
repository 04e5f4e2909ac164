"""What every job shares: Beam options (``options``), shared transforms (``transforms``), file helpers
(``files``), URL-aware file operations (fsspec for object stores) for local paths and object stores
(``storage``), the seed's Parquet schema (``schema``) and Parquet inputs (``parquet``).

Nothing is imported here, so that a module without Beam (``files``, ``schema``) can be used without it.
"""
