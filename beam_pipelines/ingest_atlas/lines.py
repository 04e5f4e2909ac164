"""Cutting the text of a JSON-lines stream into lines, whole or the lines that start in a byte range. No Beam here.

Reading is streamed (a daily dump is gigabytes): the text is read in chunks of a few MB, so a reader holds
a chunk's lines at a time. A work unit that is a byte range ``[start, end)`` of a large file owns the lines
that *start* in it, so the ranges of a file together give each line once. A line longer than the limit is
reported by its head and length (:class:`LongLine`), never held whole.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from beam_pipelines.ingest_atlas.convert import MAX_LINE_BYTES
from beam_pipelines.ingest_atlas.decompress import CHUNK_BYTES

_SMALL_READ = 64 << 10  # reads around a range boundary, where only a line's worth is needed


@dataclasses.dataclass(frozen=True)
class LongLine:
    """Stands for a line longer than the limit: its first bytes and its length."""

    head: bytes
    length: int


def iter_line_lists(
    f,
    start: int = 0,
    end: int | None = None,
    head: bytes = b"",
    chunk_bytes: int = CHUNK_BYTES,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> Iterator[list]:
    """Lists of the lines (``bytes`` without ``\\n``) that start in ``[start, end)`` of a binary stream.

    ``head`` is data already read from the stream's start. ``start > 0`` needs a seekable stream: the
    line running across ``start`` belongs to the range before. A line longer than ``max_line_bytes`` is
    reported as a :class:`LongLine` and skipped without being held in memory.
    """
    pos = start  # stream offset of the first byte of `rest`
    rest = head
    if start > 0:
        f.seek(start - 1)
        offset = start - 1  # stream offset of data[0]
        while True:  # skip the tail of the line that started before `start`
            data = f.read(min(chunk_bytes, _SMALL_READ))
            if not data:
                return
            cut = data.find(b"\n")
            if cut >= 0:
                pos = offset + cut + 1
                f.seek(pos)  # and read on from the first line that starts in the range
                break
            offset += len(data)
    while True:
        size = chunk_bytes
        if end is not None:
            if pos >= end:
                return
            # Near the end of the range, read little more than the range: only the last line's tail is needed.
            size = min(chunk_bytes, max(end - pos - len(rest), _SMALL_READ))
        data = f.read(size)
        buf = rest + data if rest else data
        if not buf:
            return
        lines = buf.split(b"\n")
        rest = lines.pop()
        if not data:  # the end of the stream: `rest` is a last line without a newline
            if rest:
                lines.append(rest)
            data = rest = b""
        if end is not None:
            complete = len(buf) - len(rest)
            if pos + complete >= end:  # every later line starts at or after `end`
                keep, p = [], pos
                for line in lines:
                    if p >= end:
                        break
                    keep.append(line)
                    p += len(line) + 1
                if keep:
                    yield keep
                return
            pos += complete
        else:
            pos += len(buf) - len(rest)
        if lines:
            yield lines
        if not data:
            return
        if len(rest) > max_line_bytes:
            length, line_head, found = len(rest), rest[: 1 << 16], False
            rest = b""
            while not found:  # drop the rest of the long line as it streams by
                data = f.read(chunk_bytes)
                if not data:
                    break
                cut = data.find(b"\n")
                found = cut >= 0
                length += cut if found else len(data)
                rest = data[cut + 1 :] if found else b""
            yield [LongLine(line_head, length)]
            if not found:
                return
            pos += length + 1
