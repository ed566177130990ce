"""What the backends share: the response contract, the per-object ``_Meta`` checked across
answers, the empty response, ``Content-Range`` parsing, the network exception types worth
a retry, and the User-Agent.

Each backend's get(target, offset, opts, meta) starts one GET and returns a response with
``start`` (the object byte its body begins at), ``total`` (object size, or None),
``tag`` (ETag / generation, or None), ``read(n)`` and ``close()``. Faults worth a
retry raise _Transient; anything else raises StorageError. The GETs are in
:mod:`.http_backend`, :mod:`.s3_backend`, :mod:`.gcs_backend` and :mod:`.pipe_backend`;
:mod:`.stream` picks one by the target's kind.
"""

from __future__ import annotations

import http.client
import re
from dataclasses import dataclass

from .. import __version__

USER_AGENT = f"ai8x-shards/{__version__}"
_GCS_CHUNK = 8 << 20
_GCS_MIN_CHUNK = 256 << 10


@dataclass
class _Meta:
    """What the first answer said about the object, checked against every later answer."""

    size: int | None = None
    size_from: str = ""
    tag: str | None = None
    request: int = _GCS_CHUNK  # bytes per GCS request (adapts to faults)


class _Empty:
    def __init__(self, start: int, total: int | None = None) -> None:
        self.start, self.total, self.tag = start, total, None

    def read(self, n: int) -> bytes:
        return b""

    def close(self) -> None:
        pass


def _content_range(value: str | None) -> tuple[int, int | None, int] | None:
    """``bytes A-B/TOTAL`` -> ``(A, TOTAL or None, B + 1)``."""
    m = re.match(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", value or "")
    if not m:
        return None
    return int(m.group(1)), None if m.group(3) == "*" else int(m.group(3)), int(m.group(2)) + 1


def _network_errors() -> tuple[type[BaseException], ...]:
    """Exception types of the network stacks the clients use (all worth a retry)."""
    types: list[type[BaseException]] = [OSError, http.client.HTTPException]
    for module, name in (("urllib3.exceptions", "HTTPError"), ("requests.exceptions", "RequestException"),
                         ("google.auth.exceptions", "TransportError"), ("google.resumable_media.common", "DataCorruption")):
        try:
            types.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):
            pass
    return tuple(types)
