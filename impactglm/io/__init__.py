"""Read and write tables with pyarrow (:mod:`impactglm.io.read`, :mod:`impactglm.io.write`).

``from impactglm.io import read_table, write_table`` is kept as a shim for one release
(the README and examples showed it)."""
from .read import read_table
from .write import write_table

__all__ = ["read_table", "write_table"]
