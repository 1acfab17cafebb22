"""Atomic result files: a reader (or a killed run) never sees half a file."""
import contextlib
import csv
import fcntl
import io
import json
import os
import pathlib

from rcae_jax import faults, trace


class CorruptFileError(ValueError):
  """A file the platform wrote earlier can no longer be read; the message names it."""


def atomic_write(path, data):
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  # one fixed temporary name: a write cut by a kill leaves a file the re-run overwrites
  tmp = path.with_name(f'.{path.name}.tmp')
  with open(tmp, 'wb' if isinstance(data, bytes) else 'w') as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  faults.point(f'write:{path.name}')
  os.replace(tmp, path)
  trace.record('writes', path)


@contextlib.contextmanager
def exclusive(path):
  """Waits for, then holds, an OS lock on `path` (created): one process at a time builds a
  shared cache (two trainings starting on a fresh cache folder). Released when the process
  ends, however it ends."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'a') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def read_json(path):
  """A JSON file this platform wrote; a clear error naming it if it is not valid JSON."""
  path = pathlib.Path(path)
  try:
    return json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CorruptFileError(f'{path}: not valid JSON ({e}); it was damaged after it was '
                           'written: delete it and re-run the command that writes it') from e


def write_json(path, obj):
  atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=_default) + '\n')


def write_csv(path, fields, rows):
  """rows (dicts) as CSV with a header, atomically."""
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=fields)
  writer.writeheader()
  writer.writerows(rows)
  atomic_write(path, buf.getvalue())


def _default(o):
  if hasattr(o, 'tolist'):
    return o.tolist()
  if hasattr(o, 'to_dict'):
    return o.to_dict()
  return str(o)


def append_jsonl(path, obj):
  with open(path, 'a') as f:
    f.write(json.dumps(obj, default=_default) + '\n')


def read_jsonl(path):
  path = pathlib.Path(path)
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_jsonl(path, max_step):
  """Drops records logged after `max_step` (a resumed run logs them again)."""
  records = [r for r in read_jsonl(path) if r['step'] <= max_step]
  atomic_write(path, ''.join(json.dumps(r) + '\n' for r in records))
