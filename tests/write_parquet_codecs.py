"""Writes the same small dataset as Parquet with each codec pyarrow offers, as HF `datasets`
and TinyZero's preprocessing write them: `python write_parquet_codecs.py DIR` writes
DIR/<codec>.parquet for snappy (pyarrow's default and `datasets`'), gzip, lz4, brotli, zstd and
none, and prints the rows as JSON for the test to compare with."""
import json
import sys

import pyarrow as pa
import pyarrow.parquet as pq

out = sys.argv[1]
rows = {
    "id": [f"q-{i:03d}" for i in range(40)],
    "question": [f"What is {i} + {i + 1}?" for i in range(40)],
    "answer": [str(2 * i + 1) for i in range(40)],
    "difficulty": ["easy" if i % 3 else "hard" for i in range(40)],
}
table = pa.table(rows)
for codec in ["snappy", "gzip", "lz4", "brotli", "zstd", "none"]:
    # Small row groups, so a reader meets several compressed pages per file.
    pq.write_table(table, f"{out}/{codec}.parquet", compression=codec, row_group_size=16)
print(json.dumps(rows))
