"""A local stand-in for the part of Google Cloud Storage's JSON API that the writer lock uses, so the lock's
requests can be tested through the real client library (gcsfs) on loopback.

Why hand-written: the GCS emulators installable from PyPI either ignore preconditions
(``gcp-storage-emulator`` stores every upload, whatever ``ifGenerationMatch`` says) or ship a foreign
binary; the point under test is exactly the precondition. This server implements, as GCS documents them:

* uploads (``POST /upload/storage/v1/b/B/o``, ``uploadType=multipart`` or ``media``), with the precondition
  ``ifGenerationMatch``: ``0`` means "only if no live object has this name", checked and applied under one
  lock, so of several concurrent conditional uploads exactly one succeeds and the rest get ``412``;
* object metadata (``GET /storage/v1/b/B/o/KEY``), media (``alt=media``, also under ``/download``, with
  ``Range``), listing (``GET /storage/v1/b/B/o`` with ``prefix``/``delimiter``), bucket metadata, delete.

``upload_delay`` (seconds) holds every upload before its check, so concurrent writers really overlap.
It tests the request logic (what gcsfs sends, how our code reads the answers); it is not GCS.
"""

from __future__ import annotations

import datetime
import email.parser
import email.policy
import http.server
import json
import threading
import time
import urllib.parse


class FakeGcs:
    """A threaded HTTP server on 127.0.0.1 holding objects in memory; :attr:`endpoint` is its URL."""

    def __init__(self, buckets=("bucket",), upload_delay: float = 0.0):
        self.objects: dict[tuple[str, str], tuple[bytes, int]] = {}  # (bucket, key) -> (data, generation)
        self.buckets = set(buckets)
        self.upload_delay = upload_delay
        self.requests: list[tuple[str, str]] = []  # (method, path with query) of every request
        self._lock = threading.Lock()
        self._generation = 1_000
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeGcs:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def put(self, bucket: str, key: str, data: bytes, if_generation_match: str | None) -> dict | None:
        """Store ``data`` unless the precondition fails (then None); check and write are one atomic step."""
        with self._lock:
            current = self.objects.get((bucket, key))
            if if_generation_match is not None:
                want = int(if_generation_match)
                if (want == 0 and current is not None) or (want != 0 and (current is None or current[1] != want)):
                    return None
            self._generation += 1
            self.objects[(bucket, key)] = (data, self._generation)
            return self.resource(bucket, key)

    def resource(self, bucket: str, key: str) -> dict:
        data, generation = self.objects[(bucket, key)]
        stamp = datetime.datetime.fromtimestamp(generation, datetime.timezone.utc).isoformat().replace("+00:00", "Z")
        return {"kind": "storage#object", "bucket": bucket, "name": key, "size": str(len(data)),
                "generation": str(generation), "metageneration": "1", "contentType": "application/octet-stream",
                "timeCreated": stamp, "updated": stamp, "storageClass": "STANDARD"}


def _handler(store: FakeGcs):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet: the tests read store.requests instead
            pass

        def _reply(self, status: int, body: bytes = b"", content_type: str = "application/json", headers=None):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if body and self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, obj) -> None:
            self._reply(status, json.dumps(obj).encode())

        def _error(self, status: int, message: str) -> None:
            reason = "conditionNotMet" if status == 412 else "notFound"
            self._json(status, {"error": {"code": status, "message": message,
                                          "errors": [{"message": message, "reason": reason}]}})

        def _route(self):
            url = urllib.parse.urlsplit(self.path)
            store.requests.append((self.command, self.path))
            query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
            parts = [urllib.parse.unquote(p) for p in url.path.split("/")]
            return url, query, parts

        def do_GET(self):
            url, query, parts = self._route()
            path = url.path
            if path.startswith("/download/"):
                path = path[len("/download"):]
            segs = path.split("/")  # ['', 'storage', 'v1', 'b', BUCKET, 'o', KEY...]
            if len(segs) < 5 or segs[1:4] != ["storage", "v1", "b"]:
                return self._error(404, f"no route {url.path}")
            bucket = urllib.parse.unquote(segs[4])
            if bucket not in store.buckets:
                return self._error(404, "The specified bucket does not exist.")
            if len(segs) == 5:
                return self._json(200, {"kind": "storage#bucket", "name": bucket, "id": bucket})
            if len(segs) == 6:  # a listing
                prefix, delimiter = query.get("prefix", ""), query.get("delimiter")
                items, prefixes = [], set()
                with store._lock:
                    keys = sorted(k for b, k in store.objects if b == bucket and k.startswith(prefix))
                    for key in keys:
                        rest = key[len(prefix):]
                        if delimiter and delimiter in rest:
                            prefixes.add(prefix + rest.split(delimiter, 1)[0] + delimiter)
                        else:
                            items.append(store.resource(bucket, key))
                return self._json(200, {"kind": "storage#objects", "items": items, "prefixes": sorted(prefixes)})
            key = urllib.parse.unquote("/".join(segs[6:]))
            with store._lock:
                found = store.objects.get((bucket, key))
                meta = store.resource(bucket, key) if found else None
            if found is None:
                return self._error(404, f"No such object: {bucket}/{key}")
            if query.get("alt") != "media":
                return self._json(200, meta)
            data = found[0]
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes="):
                lo, _, hi = rng[len("bytes="):].partition("-")
                lo, hi = int(lo or 0), int(hi) if hi else len(data) - 1
                chunk = data[lo: hi + 1]
                return self._reply(206, chunk, "application/octet-stream",
                                   {"Content-Range": f"bytes {lo}-{lo + len(chunk) - 1}/{len(data)}"})
            return self._reply(200, data, "application/octet-stream")

        def do_POST(self):
            url, query, parts = self._route()
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            segs = url.path.split("/")  # ['', 'upload', 'storage', 'v1', 'b', BUCKET, 'o']
            if segs[1:5] != ["upload", "storage", "v1", "b"] or len(segs) != 7:
                return self._error(404, f"no route {url.path}")
            bucket = urllib.parse.unquote(segs[5])
            if bucket not in store.buckets:
                return self._error(404, "The specified bucket does not exist.")
            kind = query.get("uploadType")
            if kind == "media":
                key, data = query["name"], body
            elif kind == "multipart":
                message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                    b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + body)
                meta_part, data_part = list(message.iter_parts())[:2]
                key = json.loads(meta_part.get_payload(decode=True))["name"]
                data = data_part.get_payload(decode=True)
            else:
                return self._error(400, f"uploadType {kind!r} is not implemented here")
            time.sleep(store.upload_delay)  # concurrent writers all arrive before any is decided
            resource = store.put(bucket, key, data, query.get("ifGenerationMatch"))
            if resource is None:
                return self._error(412, "At least one of the pre-conditions you specified did not hold.")
            return self._json(200, resource)

        def do_DELETE(self):
            url, query, parts = self._route()
            segs = url.path.split("/")
            if segs[1:4] != ["storage", "v1", "b"] or len(segs) < 7:
                return self._error(404, f"no route {url.path}")
            bucket, key = urllib.parse.unquote(segs[4]), urllib.parse.unquote("/".join(segs[6:]))
            with store._lock:
                found = store.objects.pop((bucket, key), None)
            if found is None:
                return self._error(404, f"No such object: {bucket}/{key}")
            self._reply(204)

    return Handler
