"""What every job shares: Beam options (``options``), shared transforms (``transforms``), file helpers
(``files``), the seed's Parquet schema (``schema``) and Parquet inputs (``parquet``).

Nothing is imported here, so that a module without Beam (``files``, ``schema``) can be used without it.
"""
