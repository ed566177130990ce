"""The S3 and GCS client objects: made on first use, cached per process, settings and environment.

There is one cache (``_CLIENTS``) and one lock for it, reset in a forked child by the
``os.register_at_fork`` hook below, so a client is never used across a fork.
Credentials and endpoints come from the clients' standard environment
(``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, ``GOOGLE_APPLICATION_CREDENTIALS``,
``STORAGE_EMULATOR_HOST``, ...), never from a manifest.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from ..errors import StorageError
from ..options import Options

USER_AGENT = "ai8x-shards"


def _env_key(*prefixes: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(prefixes)))


_CLIENTS: dict[tuple[Any, ...], Any] = {}  # keyed by pid too: a client is never used across fork
_CLIENTS_LOCK = threading.Lock()


def _after_fork() -> None:
    global _CLIENTS_LOCK
    _CLIENTS_LOCK = threading.Lock()  # another thread may have held it at the fork
    _CLIENTS.clear()


os.register_at_fork(after_in_child=_after_fork)


def s3_client(opts: Options) -> Any:
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


def gcs_bucket(bucket: str, url: str, opts: Options) -> Any:
    try:
        from google.cloud import storage
    except ImportError:
        raise StorageError("gs:// locations need google-cloud-storage: pip install 'ai8x-shards[gcs]'") from None
    key = ("gs", os.getpid(), opts.gcs_anonymous, _env_key("GOOGLE_", "STORAGE_EMULATOR_HOST", "CLOUDSDK_"))
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            try:
                client = storage.Client.create_anonymous_client() if opts.gcs_anonymous else storage.Client()
            except Exception as exc:
                raise StorageError(
                    f"{url}: cannot set up the GCS client ({type(exc).__name__}: {exc}); set GOOGLE_APPLICATION_CREDENTIALS, "
                    "or AI8X_SHARDS_GCS_ANONYMOUS=1 for a public bucket"
                ) from None
            _CLIENTS[key] = client
    return client.bucket(bucket)


def network_errors() -> tuple[type[BaseException], ...]:
    """Exception types of the network stacks the clients use (worth a retry unless permanent)."""
    import http.client

    types: list[type[BaseException]] = [OSError, http.client.HTTPException]
    for module, name in (("urllib3.exceptions", "HTTPError"), ("requests.exceptions", "RequestException"),
                         ("google.auth.exceptions", "TransportError"), ("google.resumable_media.common", "DataCorruption")):
        try:
            types.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):
            pass
    return tuple(types)
