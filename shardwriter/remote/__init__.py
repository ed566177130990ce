"""Datasets at URLs: reading with retry and resume, uploading, verifying.

A dataset location is a local folder or a URL prefix that file names are appended to:

* ``s3://BUCKET/PREFIX`` (boto3: ``pip install 'ai8x-shards[s3]'``),
* ``gs://BUCKET/PREFIX`` or ``gcs://...`` (google-cloud-storage: ``[gcs]``),
* ``http://HOST/PREFIX`` and ``https://...`` (the standard library; read-only),
* ``pipe:COMMAND ... {name} ...`` — a command whose standard output is the file named
  ``{name}``. Refused unless ``AI8X_SHARDS_ALLOW_PIPE=1``; even then the command is
  split with :func:`shlex.split` and run without a shell.

Credentials and endpoints come from the clients' standard environment, never from a
manifest: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ... for S3;
``GOOGLE_APPLICATION_CREDENTIALS`` / ``STORAGE_EMULATOR_HOST`` for GCS
(``AI8X_SHARDS_GCS_ANONYMOUS=1`` for public buckets); ``HTTPS_PROXY`` / ``SSL_CERT_FILE``
for HTTP(S).

Reads are sequential GETs with read-ahead (a thread fills a bounded queue). A dropped
connection, a stall longer than the timeout, a 5xx / 429 answer or a body that ends
early is retried with exponential backoff and jitter, resuming at the byte reached with
``Range: bytes=N-``; the answer's ``Content-Range`` is checked, a server that answers
``200`` (the whole object) has its first N bytes skipped, and a changed ``ETag`` /
generation or object size is an error rather than a silent splice. After
``retries`` failed attempts in a row without a new byte, :class:`StorageError` names the
URL and the byte offset. Tunable per call (:class:`Options`) or by environment:

=============================  =======  ===============================================
``AI8X_SHARDS_RETRIES``        8        failed attempts in a row (no byte gained) allowed
``AI8X_SHARDS_TIMEOUT``        30       seconds: connect timeout and longest stall
``AI8X_SHARDS_BACKOFF``        0.5      seconds before the first retry; doubles each time
``AI8X_SHARDS_BACKOFF_MAX``    20       longest wait between retries, seconds
``AI8X_SHARDS_READAHEAD``      8 MiB    bytes read ahead by a thread; 0: no thread
=============================  =======  ===============================================

Uploads (:func:`upload_dataset`) put every shard and index as one object each (one
PUT is atomic in S3 and GCS) and the manifest last, so a reader never sees a manifest
whose files are not all there. This module does not import :mod:`loaders` (nor torch).
"""

# The implementation lives in the submodules below; this package re-exports the public API,
# so ``from shardwriter import remote; remote.open_stream(...)`` and
# ``from shardwriter.remote import StorageError`` keep working.
from .backends import USER_AGENT
from .check import check_sha256, info_location, verify_location
from .locations import PIPE, SCHEMES, cache_root, is_url, normalize, object_url, sub_location
from .options import MissingError, Options, StorageError, parse_bytes
from .stream import RemoteStream, download, open_stream, read_all, read_manifest
from .upload import dataset_dirs, delete_file, staged_output, upload_dataset, upload_file

__all__ = [
    "PIPE",
    "SCHEMES",
    "USER_AGENT",
    "MissingError",
    "Options",
    "RemoteStream",
    "StorageError",
    "cache_root",
    "check_sha256",
    "dataset_dirs",
    "delete_file",
    "download",
    "info_location",
    "is_url",
    "normalize",
    "object_url",
    "open_stream",
    "parse_bytes",
    "read_all",
    "read_manifest",
    "staged_output",
    "sub_location",
    "upload_dataset",
    "upload_file",
    "verify_location",
]
