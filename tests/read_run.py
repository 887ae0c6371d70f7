#!/usr/bin/env python3
"""Reads every stream of a tandem run with pyarrow and DuckDB, the way users will, and prints
what it found as JSON: {stream: {"pyarrow": rows, "duckdb": rows, "steps": [...], "columns": [...]}}.

    python3 tests/read_run.py runs/<run_id>
"""
import json
import pathlib
import sys

import duckdb
import pyarrow.dataset as ds

run = pathlib.Path(sys.argv[1])
manifest = json.loads((run / "manifest.json").read_text())
out = {}
for stream in manifest["streams"]:
    path = run / "streams" / stream["name"]
    if not path.exists():
        continue
    table = ds.dataset(path, format="parquet", partitioning="hive").to_table()
    rows = duckdb.sql(f"select count(*) from read_parquet('{path}/*/*.parquet')").fetchall()[0][0]
    steps = [r[0] for r in duckdb.sql(f"select distinct step from read_parquet('{path}/*/*.parquet') order by step").fetchall()]
    out[stream["name"]] = {"pyarrow": table.num_rows, "duckdb": rows, "steps": steps, "columns": sorted(table.schema.names)}
print(json.dumps(out))
