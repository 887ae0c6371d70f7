"""Writes one small dataset in every layout HF `datasets` writes, with `datasets` itself:
`python write_hf_layouts.py DIR` writes

- DIR/saved/: `Dataset.save_to_disk` in three shards (Arrow IPC streams and a `state.json`);
- DIR/dict/: `DatasetDict.save_to_disk` (a `dataset_dict.json` and one directory per split);
- DIR/array.json: `Dataset.to_json(lines=False)`, one JSON array;
- DIR/lines.jsonl: `Dataset.to_json()`, JSON Lines;
- DIR/data/: `Dataset.to_parquet` in two shards named as on the hub;

and prints the rows as JSON for the test to compare with. Offline: nothing is downloaded."""
import json
import os
import sys

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

import datasets  # noqa: E402

out = sys.argv[1]
rows = {
    "id": [f"q-{i:03d}" for i in range(30)],
    "problem": [f"What is {i} + {i + 1}? [a, {{b}}] \"quoted\"" for i in range(30)],
    "solution": [f"\\boxed{{{2 * i + 1}}}" for i in range(30)],
    "level": [f"Level {1 + i % 5}" for i in range(30)],
}
ds = datasets.Dataset.from_dict(rows)
ds.save_to_disk(f"{out}/saved", num_shards=3)
datasets.DatasetDict({"train": ds, "test": ds.select(range(5))}).save_to_disk(f"{out}/dict")
ds.to_json(f"{out}/array.json", lines=False)
ds.to_json(f"{out}/lines.jsonl")
os.makedirs(f"{out}/data")
for shard in range(2):
    ds.shard(num_shards=2, index=shard, contiguous=True).to_parquet(
        f"{out}/data/train-{shard:05d}-of-00002.parquet"
    )
print(json.dumps(rows))
