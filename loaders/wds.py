"""Read ai8x-shards datasets in a stock `webdataset <https://github.com/webdataset/webdataset>`_ pipeline.

Our shards are plain WebDataset tars: one member per sample, ``KEY.msgpack``, holding
the whole sample (input bytes, shape, target) as one msgpack record (``docs/FORMAT.md``).
Stock ``.decode()`` does not know that record, so hand the pipeline one of these:

.. code-block:: python

    import webdataset as wds
    from loaders.wds import decode_sample, shard_urls

    ds = wds.WebDataset(shard_urls("OUT", "train"), shardshuffle=False).map(decode_sample)
    for x, y in ds:  # float32 input, int64 target: exactly what ShardDataset serves
        ...

- :func:`decode_sample` (for ``.map``): a raw sample -> ``(input, target)`` tensors, bit
  for bit what :class:`~loaders.ShardDataset` serves for that sample (``act_mode_8bit``,
  ``output="uint8"`` as there); :func:`decoder` makes one with other settings.
- :func:`record_handler` (for ``.decode``): turns the ``msgpack`` field into a
  :class:`shardwriter.format.Record` (``key``, ``x``, ``target_kind``, ``y``, ``source``).
- :func:`shard_urls`: the shard files of a split, from the manifest (no brace patterns
  to guess).

A stock pipeline reads records only: it does not check the per-sample hashes kept in
the index files, nor shard sha256s (our readers do; ``ai8x-shards verify DIR`` checks a
whole dataset). A damaged record raises :class:`~shardwriter.errors.FormatError`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import numpy as np
import torch

from shardwriter import format as fmt
from shardwriter.errors import FormatError, SettingsError
from shardwriter.options import Options
from shardwriter.storage import open_store

from .transforms import normalize, resolve_act_mode

__all__ = ["decode_sample", "decoder", "record_handler", "sample_record", "shard_urls", "tensors"]

_FIELD = fmt.MEMBER_SUFFIX.lstrip(".")  # "msgpack": the field a webdataset sample holds our record under


def tensors(rec: fmt.Record, *, act_mode_8bit: Any = False, output: str = "float") -> tuple[torch.Tensor, torch.Tensor]:
    """A decoded record as :class:`~loaders.ShardDataset` serves it: ``(input, target)``.

    Input float32 ``(p - 128) / 128`` (``p - 128`` with ``act_mode_8bit``; a bool or an
    object with that attribute, like train.py's ``args``), or uint8 with ``output="uint8"``.
    Target int64 0-d (class), int64 HxW (mask) or float32 (regression).
    """
    if output not in ("float", "uint8"):
        raise SettingsError(f"output must be 'float' or 'uint8', not {output!r}")
    x = torch.from_numpy(np.array(rec.x, dtype=np.uint8, copy=True))
    if output == "float":
        x = normalize(x, resolve_act_mode(act_mode_8bit))
    if rec.target_kind == "class":
        y = torch.tensor(int(rec.y), dtype=torch.int64)
    elif rec.target_kind == "mask":
        y = torch.from_numpy(np.asarray(rec.y).astype(np.int64))
    else:
        y = torch.from_numpy(np.asarray(rec.y).astype(np.float32))
    return x, y


def sample_record(sample: Mapping[str, Any]) -> fmt.Record:
    """The :class:`~shardwriter.format.Record` of a raw webdataset sample (its ``msgpack`` field)."""
    where = f"{sample.get('__url__', 'webdataset sample')} sample {sample.get('__key__', '?')}"
    data = sample.get(_FIELD)
    if isinstance(data, fmt.Record):  # already decoded by record_handler
        return data
    if not isinstance(data, (bytes, bytearray, memoryview)):
        fields = sorted(k for k in sample if not k.startswith("__"))
        raise FormatError(f"{where}: no {_FIELD!r} field of bytes (fields: {fields}); is this an ai8x-shards shard, "
                          "and was the sample decoded by another handler first?")
    rec = fmt.decode_record(bytes(data), where)
    key = sample.get("__key__")
    if key is not None and os.path.basename(str(key)) != rec.key:
        raise FormatError(f"{where}: record key {rec.key} differs from the member name")
    return rec


def decode_sample(sample: Mapping[str, Any], *, act_mode_8bit: Any = False, output: str = "float") -> tuple[torch.Tensor, torch.Tensor]:
    """For ``WebDataset(...).map(decode_sample)``: a raw sample -> ``(input, target)`` (see :func:`tensors`)."""
    return tensors(sample_record(sample), act_mode_8bit=act_mode_8bit, output=output)


def decoder(*, act_mode_8bit: Any = False, output: str = "float") -> Callable[[Mapping[str, Any]], tuple[torch.Tensor, torch.Tensor]]:
    """:func:`decode_sample` with these settings, for ``.map(decoder(act_mode_8bit=True))`` (picklable)."""
    if output not in ("float", "uint8"):
        raise SettingsError(f"output must be 'float' or 'uint8', not {output!r}")
    return partial(decode_sample, act_mode_8bit=act_mode_8bit, output=output)


def record_handler(key: str, data: bytes) -> fmt.Record | None:
    """A ``WebDataset(...).decode(record_handler)`` handler: the ``msgpack`` field -> a Record.

    Returns None for any other field, so other handlers still apply to them. The
    record's arrays are read-only views of the member's bytes.
    """
    if not key.lower().endswith("." + _FIELD):
        return None
    return fmt.decode_record(data, f"webdataset field {key}")


def shard_urls(location: str | os.PathLike[str], split: str = "train", options: Options | None = None) -> list[str]:
    """The shard files of ``split``, in order, as paths (a local dataset) or URLs, from the manifest.

    ``http(s)://`` URLs work in stock webdataset as they are; for ``s3://`` and
    ``gs://``, webdataset needs a ``pipe:`` command of your own (e.g. ``pipe:aws s3 cp URL -``).
    """
    store = open_store(location, options)
    m = store.read_manifest()
    return [store.describe(s.file) for s in m.split(split, store.location).shards]
