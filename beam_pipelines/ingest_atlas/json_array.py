"""Cutting the text of a JSON array (an API download) into its elements, one value in memory at a time. No Beam here.

An element that cannot be parsed is reported as :data:`INVALID` with its text, and reading resumes at the
next ``}, {``, so one bad element costs one rejected record, not the file.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator

from beam_pipelines.ingest_atlas.convert import MAX_LINE_BYTES
from beam_pipelines.ingest_atlas.decompress import CHUNK_BYTES

_WS = re.compile("[ \t\r\n\ufeff]*")  # white space between values, and a byte order mark
_ELEMENT_BREAK = re.compile(r"\}\s*,\s*\{")


class _Invalid:
    """Stands for a JSON value that could not be parsed (see :func:`iter_json_values`)."""


INVALID = _Invalid()


def iter_json_values(
    f,
    head: bytes = b"",
    chunk_bytes: int = CHUNK_BYTES,
    max_value_bytes: int = MAX_LINE_BYTES,
) -> Iterator[tuple[object, str]]:
    """``(value, text)`` for each JSON value of a stream, one array level opened: for ``[{..}, {..}]``
    the two objects, for ``[..] [..]`` the elements of both. An unparseable value gives
    ``(INVALID, text)``; reading resumes at the next ``}, {``. Only one value is held in memory at a time.
    """
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")("replace")
    buf = utf8.decode(head)
    pos = 0
    eof = False
    in_array = False

    def read_more() -> bool:
        nonlocal buf, pos, eof
        data = f.read(chunk_bytes)
        if not data:
            eof = True
            buf, pos = buf[pos:] + utf8.decode(b"", final=True), 0
            return False
        buf, pos = buf[pos:] + utf8.decode(data), 0
        return True

    while True:
        pos = _WS.match(buf, pos).end()
        if pos >= len(buf):
            if eof or not read_more():
                if pos >= len(buf):
                    return
            continue
        char = buf[pos]
        if in_array and char == "]":
            in_array, pos = False, pos + 1
            continue
        if in_array and char == ",":
            pos += 1
            continue
        if not in_array and char == "[":
            in_array, pos = True, pos + 1
            continue
        try:
            value, end = decoder.raw_decode(buf, pos)
        except json.JSONDecodeError:
            # The value may just be cut by the end of the buffer: read on and retry. It is invalid only
            # if it still fails at the end of the stream or with max_value_bytes of text in hand.
            if not eof and len(buf) - pos < max_value_bytes:
                read_more()
                continue
            found = _ELEMENT_BREAK.search(buf, pos + 1)
            while found is None and not eof and len(buf) - pos < max_value_bytes:
                read_more()
                found = _ELEMENT_BREAK.search(buf, pos + 1)
            stop = found.start() + 1 if found else len(buf)
            yield INVALID, buf[pos:stop]
            pos = stop
            continue
        yield value, buf[pos:end]
        pos = end
