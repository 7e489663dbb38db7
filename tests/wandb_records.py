"""Read what an offline W&B run wrote (`run-*.wandb`, LevelDB-log framing of protobuf `Record`s).

wandb >= 0.20 no longer ships a Python reader for its transaction log, so tests parse the documented framing
themselves: a 7-byte header, then 32 KiB blocks of chunks (crc32: 4 bytes, length: 2, type: 1).
"""

from __future__ import annotations

import json
import struct
from collections import defaultdict
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def iter_records(path: Path):
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left_in_block = _BLOCK - (pos % _BLOCK)
        if left_in_block < 7:  # block trailer padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == _FULL:
            pending = chunk
        elif kind == _FIRST:
            pending = chunk
            continue
        elif kind == _MIDDLE:
            pending += chunk
            continue
        elif kind == _LAST:
            pending += chunk
        else:
            break
        record = pb.Record()
        record.ParseFromString(pending)
        yield record


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def read_offline_run(run_dir: Path) -> dict:
    """{'history': {key: [values]}, 'summary': {key: value}, 'config': {key: value}, 'files': [...]}."""
    (log_file,) = Path(run_dir).glob("run-*.wandb")
    history, summary, config, files = defaultdict(list), {}, {}, []
    for record in iter_records(log_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            for item in record.history.item:
                history[_key(item)].append(json.loads(item.value_json))
        elif kind == "summary":
            for item in record.summary.update:
                summary[_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                config[_key(item)] = json.loads(item.value_json)
        elif kind == "files":
            files += [f.path for f in record.files.files]
    return {"history": dict(history), "summary": summary, "config": config, "files": files}
