"""The object-store side of :mod:`beam_pipelines.common.storage`: which fsspec filesystem serves a URL under
the jobs' options, and a store's failures turned into one clear line.

Configuration: :func:`configure` takes the jobs' Beam filesystem options (``--s3_endpoint_url``,
``--s3_access_key_id``, ..., ``--project``) and hands them to s3fs/gcsfs; without them s3fs (botocore)
reads the standard AWS environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_REGION``, the
shared credentials file), and gcsfs uses application-default credentials (or the emulator named by
``STORAGE_EMULATOR_HOST``). :func:`filesystem` keeps one fsspec filesystem object, and so one connection pool,
per process and set of options.

Errors: :func:`explain` names the three common mistakes (a bucket that does not exist, no credentials,
access denied) in one line; :func:`store_errors` re-raises any failure of a store call as
:class:`~beam_pipelines.common.errors.InputError` (those three) or :class:`OSError` naming the URL.

Like :mod:`~beam_pipelines.common.storage`, it never imports Apache Beam.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator

from beam_pipelines.common.errors import InputError

_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")

_options: dict = {}  # the filesystem options given to configure(), shipped to workers in job contexts


def scheme(path: str) -> str:
    """``s3``, ``gs``, ... for a URL; ``""`` for a local path (``file://`` counts as local)."""
    m = _URL.match(path)
    return m.group(1).lower() if m and m.group(1).lower() != "file" else ""


def bucket_of(url: str) -> str:
    """The bucket of an object-store URL (``s3://BUCKET/key``)."""
    rest = _URL.sub("", url, count=1)
    return rest.split("/", 1)[0]


def key_of(url: str) -> str:
    """The object key (path inside the bucket) of an object-store URL; ``""`` for the bucket itself."""
    rest = _URL.sub("", url, count=1)
    return rest.split("/", 1)[1] if "/" in rest else ""


# --- configuration -------------------------------------------------------------------------------

_FS_OPTION_PREFIXES = ("s3_", "gcs_", "project", "hdfs_", "azure_", "blob_")


def filesystem_options(pipeline_options) -> dict:
    """The filesystem options (S3, GCS, HDFS, Azure) out of a Beam ``PipelineOptions``, as a small dict
    that a job context can carry to workers that did not get the pipeline's options (Dask)."""
    everything = pipeline_options.get_all_options(drop_default=True)
    return {k: v for k, v in everything.items() if k.startswith(_FS_OPTION_PREFIXES) and v is not None}


def configure(options: dict | None) -> None:
    """Use ``options`` (see :func:`filesystem_options`) for every object-store call in this process from
    now on. Idempotent and cheap; a worker calls it with its job context's options before touching a URL."""
    global _options
    _options = dict(options or {})


def current_options() -> dict:
    """The options :func:`configure` was last given."""
    return dict(_options)


# Beam's S3 options, as s3fs takes them (top-level keyword, or a keyword of the botocore client).
_S3_KWARGS = {"s3_access_key_id": "key", "s3_secret_access_key": "secret", "s3_session_token": "token",
              "s3_endpoint_url": "endpoint_url"}
_S3_CLIENT_KWARGS = {"s3_region_name": "region_name", "s3_api_version": "api_version", "s3_verify": "verify"}
_EXTRA = {"s3": "s3fs (pip install 'ping-llm[aws]')", "gs": "gcsfs (pip install 'ping-llm[gcp]')"}


def fsspec_kwargs(protocol: str, options: dict | None = None) -> dict:
    """The keyword arguments of the fsspec filesystem for ``protocol`` under the jobs' filesystem
    ``options`` (default: those of :func:`configure`).

    Listings are never cached: another process (a worker) may have written since the last one.
    """
    options = _options if options is None else options
    kwargs: dict = {"use_listings_cache": False}
    if protocol in ("s3", "s3a"):
        kwargs.update({kw: options[k] for k, kw in _S3_KWARGS.items() if options.get(k)})
        client = {kw: options[k] for k, kw in _S3_CLIENT_KWARGS.items() if options.get(k) is not None}
        if client:
            kwargs["client_kwargs"] = client
        if options.get("s3_disable_ssl"):
            kwargs["use_ssl"] = False
    elif protocol in ("gs", "gcs"):
        if options.get("project"):
            kwargs["project"] = options["project"]
        # gcsfs falls back to anonymous access when it finds no credentials; a missing login should be
        # one clear error instead (application-default credentials), except against a local emulator.
        kwargs["token"] = "anon" if os.environ.get("STORAGE_EMULATOR_HOST") else "google_default"
    return kwargs


_filesystems: dict = {}  # (pid, protocol, options) -> filesystem: one client per process and options


def filesystem(url: str):
    """The fsspec filesystem for ``url``'s protocol under the configured options (one per process).

    Raises :class:`InputError` naming ``url`` when no filesystem is installed for its protocol.
    """
    # fsspec imported here: 0.17-0.24 s of start-up (measured after this module, 2-core shared machine) that
    # a run on local paths, the common case, never needs.
    import fsspec

    protocol = scheme(url)
    kwargs = fsspec_kwargs(protocol)
    key = (os.getpid(), protocol, json.dumps(kwargs, sort_keys=True, default=str))
    fs = _filesystems.get(key)
    if fs is None:
        try:
            if protocol in ("gs", "gcs") and os.environ.get("STORAGE_EMULATOR_HOST"):
                # gcsfs's default class first asks a gRPC control plane for each bucket's layout (zonal
                # buckets), which an emulator does not serve; its core class speaks the JSON API only. Imported
                # here: gcsfs is optional (the [gcp] extra), and its absence is the ImportError below.
                from gcsfs.core import GCSFileSystem

                fs = GCSFileSystem(**kwargs)
            else:
                fs = fsspec.filesystem(protocol, **kwargs)
        except ImportError as exc:
            needs = _EXTRA.get(protocol, exc.name or "a filesystem package")
            raise InputError(f"{url}: {protocol}:// needs {needs}") from exc
        except ValueError as exc:  # fsspec: "Protocol not known"
            raise InputError(f"{url}: no filesystem for {protocol}:// ({first_line(str(exc))})") from exc
        except Exception as exc:
            raise wrap_error(url, exc) from exc
        if len(_filesystems) > 16:  # options of forked parents, or of long-finished jobs in a test session
            _filesystems.clear()
        _filesystems[key] = fs
    return fs


def with_protocol(protocol: str, path: str) -> str:
    """fsspec returns paths without the protocol (``bucket/key``): put it back."""
    return f"{protocol}://{path}"


# --- errors --------------------------------------------------------------------------------------


def _status(exc: BaseException) -> int | None:
    for attr in ("code", "status_code", "status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status is None:  # botocore's head_bucket error: the code is the status ("404")
            code = str(response.get("Error", {}).get("Code", ""))
            status = int(code) if code.isdigit() else None
        return status
    return None


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        for nxt in (e.__cause__, e.__context__):
            if nxt is not None:
                todo.append(nxt)


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of the store's answer behind ``exc`` (s3fs keeps botocore's error as the cause)."""
    for e in _causes(exc):
        code = _status(e)
        if code is not None:
            return code
    return None


def explain(url: str, exc: BaseException) -> str | None:
    """One line for the common object-store failures (no bucket, no credentials, access denied), else None."""
    for e in _causes(exc):
        text = f"{type(e).__name__}: {e}"
        code = _status(e)
        if "NoCredentials" in text or "Unable to locate credentials" in text or "DefaultCredentialsError" in text:
            if scheme(url) in ("gs", "gcs"):
                return (
                    f"{url}: no credentials for gs:// (application-default credentials: run `gcloud auth "
                    f"application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a key file)"
                )
            return (
                f"{url}: no credentials for {scheme(url)}:// (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                f"a profile, or --s3_access_key_id/--s3_secret_access_key)"
            )
        if "NoSuchBucket" in text or "bucket does not exist" in text.lower():
            return f"{url}: bucket {bucket_of(url)!r} does not exist"
        if (
            code == 403
            or isinstance(e, PermissionError)  # s3fs's translation of AccessDenied
            or text.startswith("OSError: Forbidden")  # gcsfs's 403
            or "AccessDenied" in text
            or "InvalidAccessKeyId" in text
            or "SignatureDoesNotMatch" in text
        ):
            return f"{url}: access denied ({first_line(text)})"
    return None


def first_line(text: str) -> str:
    """The first line of ``text``, at most 200 characters (an exception's message in an error line)."""
    return text.strip().splitlines()[0][:200] if text.strip() else text


def wrap_error(url: str, exc: BaseException) -> Exception:
    """``exc``, a failure of a store call on ``url``, as the error to raise: :class:`InputError` with
    :func:`explain`'s line, else an :class:`OSError` naming ``url``."""
    line = explain(url, exc)
    if line is not None:
        return InputError(line)
    if isinstance(exc, OSError):
        return exc
    return OSError(f"{url}: {type(exc).__name__}: {first_line(str(exc))}")


@contextlib.contextmanager
def store_errors(url: str) -> Iterator[None]:
    """Re-raise an object-store failure as InputError (the three common mistakes) or OSError (the rest)."""
    try:
        yield
    except InputError:
        raise
    except Exception as exc:
        raise wrap_error(url, exc) from exc
