"""The writer lock of a store on object storage (``s3://``): a lock object, created only if
absent and kept alive by a heartbeat.

``STORE/.ml4ml-writer`` is PUT with ``If-None-Match: *``: exactly one writer creates it.
While it holds the lock, a thread rewrites it every ``stale_after / 4`` seconds with
``If-Match`` on its own ETag (a heartbeat). A lock not rewritten for ``stale_after``
seconds is stale (its writer died or lost the network); the next writer replaces it with
``If-Match`` on the stale ETag, so of two writers taking over the same stale lock exactly
one succeeds.

Staleness is judged by the object store's clock alone, never a writer's: the lock's age
is the ``Date`` header of the response that read it (the server's time now) minus the
object's ``LastModified`` (the server's time of the last heartbeat). Both are stamped by
the server (AWS S3, MinIO and moto send both, to the second), so a writer whose clock
runs minutes fast or slow neither takes over a live lock nor waits forever on a dead
one; ages are exact to about a second, far below ``stale_after``. The holder's own time
(``heartbeat`` in the object) is kept for people only. This process's clock is read
through ``_clock`` alone. Releasing deletes it with ``If-Match`` too. A writer whose heartbeat
fails (someone took over its lock after it stalled longer than ``stale_after``) marks the
lock lost, and its next layout commit is refused.

What this guarantees, and what not (README, "Object storage"): two live writers are never
both admitted; a writer that stalls longer than ``stale_after`` seconds and then resumes
may still write chunks before its next commit notices the loss. Any S3-compatible service
with conditional writes (AWS S3 since 2024, MinIO, moto) is supported.
"""

from __future__ import annotations

import json
import threading
import time
from email.utils import parsedate_to_datetime

from ml4ml.errors import StoreError

__all__ = ["acquire_object_lock", "read_lock", "lost"]

LOCK_NAME = ".ml4ml-writer"
_lost: set = set()


def _client_and_key(url: str):
    from ml4ml.store.backend import require_s3, storage_options

    require_s3(url)  # one clear line without the s3 extra
    import boto3

    if not url.startswith("s3://"):
        raise StoreError("a writer lock on this kind of URL is not supported; use a local "
                         "folder or s3://", file=url)
    bucket, _, prefix = url[len("s3://"):].partition("/")
    options = storage_options(url)
    client = boto3.client("s3", endpoint_url=options.get("endpoint_url"),
                          region_name=options.get("client_kwargs", {}).get("region_name"))
    key = f"{prefix.rstrip('/')}/{LOCK_NAME}" if prefix else LOCK_NAME
    return client, bucket, key


def _clock() -> float:
    """This process's clock (seconds since 1970), written into the lock for people."""
    return time.time()


def _age(response) -> float:
    """Seconds since the lock object was last written, by the object store's clock."""
    date = response["ResponseMetadata"]["HTTPHeaders"]["date"]
    return (parsedate_to_datetime(date) - response["LastModified"]).total_seconds()


def _code(exc) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def read_lock(url: str) -> dict | None:
    """The lock object's holder description with its ``age_s`` (seconds since its last
    heartbeat, by the object store's clock), or None when there is none."""
    client, bucket, key = _client_and_key(url)
    try:
        response = client.get_object(Bucket=bucket, Key=key)
        body = response["Body"].read()
    except client.exceptions.NoSuchKey:
        return None
    except Exception as exc:  # noqa: BLE001 - botocore errors
        if _code(exc) in ("NoSuchKey", "404"):
            return None
        raise
    return {**_holder(body), "age_s": _age(response)}


def _holder(body: bytes) -> dict:
    try:
        info = json.loads(body)
    except ValueError:
        info = None
    return info if isinstance(info, dict) else {"pid": "?", "host": "?",
                                                  "command": "unreadable lock object"}


def lost(url: str) -> bool:
    """Whether this process lost the lock of ``url`` (someone took it over)."""
    return url.rstrip("/") in _lost


def acquire_object_lock(url: str, description: dict, wait: float, stale_after: float,
                        describe):
    """Take the lock of the store at ``url``; (release function, notes)."""
    client, bucket, key = _client_and_key(url)
    deadline = time.monotonic() + wait
    notes = []
    while True:
        body = json.dumps({**description, "heartbeat": _clock()}).encode()
        try:
            etag = client.put_object(Bucket=bucket, Key=key, Body=body,
                                     IfNoneMatch="*")["ETag"]
            break
        except Exception as exc:  # noqa: BLE001
            if _code(exc) not in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise StoreError(f"cannot take the store's writer lock: {exc}", file=url) \
                    from None
        try:
            head = client.get_object(Bucket=bucket, Key=key)
            raw, old, age = head["Body"].read(), head["ETag"], _age(head)
        except Exception:  # noqa: BLE001 - released in between: try again
            if time.monotonic() >= deadline:
                raise StoreError("cannot read the store's writer lock", file=url) from None
            time.sleep(0.2)
            continue
        holder = _holder(raw)
        if age > stale_after:  # by the object store's clock, not ours nor the holder's
            try:
                etag = client.put_object(Bucket=bucket, Key=key, Body=body, IfMatch=old)["ETag"]
                notes.append(f"took over a stale writer lock left by {describe(holder)}")
                break
            except Exception:  # noqa: BLE001 - another writer took it first
                pass
        if time.monotonic() >= deadline:
            raise StoreError(f"another process is writing this store: {describe(holder)}",
                             file=url, hint="wait for it to finish (readers are not "
                             "blocked), or stop it; a killed writer's lock goes stale after "
                             f"{stale_after:g} s")
        time.sleep(0.2)
    state = {"etag": etag}
    stop = threading.Event()
    name = url.rstrip("/")
    _lost.discard(name)

    def heartbeat():
        while not stop.wait(stale_after / 4):
            body = json.dumps({**description, "heartbeat": _clock()}).encode()
            try:
                state["etag"] = client.put_object(Bucket=bucket, Key=key, Body=body,
                                                  IfMatch=state["etag"])["ETag"]
            except Exception:  # noqa: BLE001 - taken over: lost
                _lost.add(name)
                return

    thread = threading.Thread(target=heartbeat, daemon=True, name="ml4ml-lock-heartbeat")
    thread.start()

    def release(interrupted: bool = False):  # an object store leaves no temporary files
        stop.set()
        thread.join(5)
        try:
            client.delete_object(Bucket=bucket, Key=key, IfMatch=state["etag"])
        except Exception:  # noqa: BLE001 - already taken over: nothing of ours to delete
            pass

    return release, notes
