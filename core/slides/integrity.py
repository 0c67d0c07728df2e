"""Spot truncated TIFF-family files before a decoder does.

An interrupted copy of a slide is common and decoders react badly to it: OpenSlide then calls the file
"unsupported", and Pillow happily shows the first page. Walking the TIFF directory chain and checking that every
directory and every tile or strip lies inside the file costs a few reads and lets us say what actually happened.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}
_INT_FORMATS = {3: "H", 4: "I", 13: "I", 16: "Q", 18: "Q", 1: "B", 8: "h", 9: "i", 17: "q"}
_OFFSET_TAGS = {273: 279, 324: 325}  # StripOffsets -> StripByteCounts, TileOffsets -> TileByteCounts
_MAX_IFDS = 4096


def tiff_problem(path: Path) -> str | None:
    """A plain-words description of why a TIFF-family file is damaged, or None (also for non-TIFF files).

    Only certain findings are reported; anything this walker does not understand is left to the decoders. Classic
    TIFFs above 4 GiB are skipped: NDPI stores wrapped 32-bit offsets there that only its own reader can untangle.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            return _walk(fh, size)
    except (OSError, struct.error, ValueError):
        return None


def _walk(fh, size: int) -> str | None:
    head = fh.read(16)
    if len(head) < 8 or head[:2] not in (b"II", b"MM"):
        return None
    bo = "<" if head[:2] == b"II" else ">"
    magic = struct.unpack(bo + "H", head[2:4])[0]
    if magic == 42:
        big, entry_size, count_fmt, off_fmt, inline = False, 12, "H", "I", 4
        offset = struct.unpack(bo + "I", head[4:8])[0]
        if size > 0xFFFFFFFF:
            return None
    elif magic == 43:
        if len(head) < 16:
            return _truncated(size, 16)
        big, entry_size, count_fmt, off_fmt, inline = True, 20, "Q", "Q", 8
        offset = struct.unpack(bo + "Q", head[8:16])[0]
    else:
        return None
    count_size = struct.calcsize(count_fmt)
    off_size = struct.calcsize(off_fmt)
    seen: set[int] = set()
    index = 0
    while offset:
        if offset in seen or index >= _MAX_IFDS:
            return None  # a loop or an absurd chain: not ours to judge
        seen.add(offset)
        if offset + count_size > size:
            return _truncated(size, offset + count_size, f"image directory {index}")
        fh.seek(offset)
        n = struct.unpack(bo + count_fmt, fh.read(count_size))[0]
        if n == 0 or n > 10000:
            return None
        end = offset + count_size + n * entry_size + off_size
        if end > size:
            return _truncated(size, end, f"image directory {index}")
        raw = fh.read(n * entry_size + off_size)
        next_offset = struct.unpack(bo + off_fmt, raw[n * entry_size:])[0]
        entries = {}
        for i in range(n):
            chunk = raw[i * entry_size:(i + 1) * entry_size]
            if big:
                tag, typ, cnt = struct.unpack(bo + "HHQ", chunk[:12])
                value = chunk[12:20]
            else:
                tag, typ, cnt = struct.unpack(bo + "HHI", chunk[:8])
                value = chunk[8:12]
            entries[tag] = (typ, cnt, value)
        for off_tag, cnt_tag in _OFFSET_TAGS.items():
            if off_tag in entries and cnt_tag in entries:
                offs = _values(fh, bo, entries[off_tag], inline, off_fmt, size)
                cnts = _values(fh, bo, entries[cnt_tag], inline, off_fmt, size)
                if offs is None or cnts is None:
                    return _truncated(size, size + 1, f"the tile table of image {index}")
                if len(offs) != len(cnts):
                    return None
                need = int((offs + cnts)[cnts > 0].max(initial=0))
                if need > size:
                    return _truncated(size, need, f"image {index}")
        offset = next_offset
        index += 1
    return None


def _values(fh, bo: str, entry, inline: int, off_fmt: str, size: int) -> np.ndarray | None:
    typ, cnt, value = entry
    fmt = _INT_FORMATS.get(typ)
    if fmt is None:
        raise ValueError("not an integer tag")
    nbytes = cnt * _TYPE_SIZES[typ]
    if nbytes <= inline:
        data = value[:nbytes]
    else:
        where = struct.unpack(bo + off_fmt, value[: struct.calcsize(off_fmt)])[0]
        if where + nbytes > size:
            return None
        fh.seek(where)
        data = fh.read(nbytes)
    if len(data) < nbytes:
        return None
    return np.frombuffer(data, dtype=np.dtype(bo + fmt)).astype(np.int64)


def _truncated(size: int, needed: int, what: str = "the header") -> str:
    return (f"the file is truncated: {what} needs {needed:,} bytes but the file has only {size:,}. "
            "The copy or download is incomplete; copy the slide again.")
