"""The S3 and GCS client objects: made on first use, cached per process and environment.

There is one cache (``_CLIENTS``) and one lock for it, reset in a forked child by the
``os.register_at_fork`` hook below, so a client is never used across a fork.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from .backends import USER_AGENT
from .locations import _Target
from .options import Options, StorageError


def _env_key(*prefixes: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(prefixes)))


_CLIENTS: dict[tuple[Any, ...], Any] = {}  # keyed by pid too: a client is never used across fork
_CLIENTS_LOCK = threading.Lock()


def _after_fork() -> None:
    global _CLIENTS_LOCK
    _CLIENTS_LOCK = threading.Lock()  # another thread may have held it at the fork
    _CLIENTS.clear()


os.register_at_fork(after_in_child=_after_fork)


def _s3_client(opts: Options) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise StorageError("s3:// locations need boto3: pip install 'ai8x-shards[s3]'") from None
    key = ("s3", os.getpid(), opts.timeout, _env_key("AWS_"))
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            config = Config(
                connect_timeout=opts.timeout,
                read_timeout=opts.timeout,
                retries={"total_max_attempts": 1, "mode": "standard"},
                # S3-compatible servers often reject botocore's newer default checksum trailers.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                user_agent_extra=USER_AGENT,
                max_pool_connections=32,
            )
            try:
                client = boto3.session.Session().client("s3", config=config)
            except Exception as exc:
                raise StorageError(f"cannot set up the S3 client ({type(exc).__name__}: {exc})") from None
            _CLIENTS[key] = client
    return client


def _gcs_bucket(t: _Target, opts: Options) -> Any:
    try:
        from google.cloud import storage
    except ImportError:
        raise StorageError("gs:// locations need google-cloud-storage: pip install 'ai8x-shards[gcs]'") from None
    key = ("gs", os.getpid(), _env_key("GOOGLE_", "STORAGE_EMULATOR_HOST", "AI8X_SHARDS_GCS_ANONYMOUS", "CLOUDSDK_"))
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            try:
                if os.environ.get("AI8X_SHARDS_GCS_ANONYMOUS") == "1":
                    client = storage.Client.create_anonymous_client()
                else:
                    client = storage.Client()
            except Exception as exc:
                raise StorageError(
                    f"{t.url}: cannot set up the GCS client ({type(exc).__name__}: {exc}); set GOOGLE_APPLICATION_CREDENTIALS, "
                    "or AI8X_SHARDS_GCS_ANONYMOUS=1 for a public bucket"
                ) from None
            _CLIENTS[key] = client
    return client.bucket(t.bucket)
