"""How much memory this computer has: caches and in-memory images size themselves as a share of it."""

from __future__ import annotations

import os

_FALLBACK = 8 * 2**30


def physical_memory_bytes() -> int:
    """Total physical memory; 8 GiB when the platform will not say (an assumption that errs on the small side)."""
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        if pages > 0 and page_size > 0:
            return int(pages * page_size)
    except (AttributeError, ValueError, OSError):
        pass
    try:  # Windows
        import ctypes

        class _Status(ctypes.Structure):
            _fields_ = [("length", ctypes.c_ulong), ("load", ctypes.c_ulong), ("total", ctypes.c_ulonglong),
                        ("avail", ctypes.c_ulonglong), ("pagefile", ctypes.c_ulonglong),
                        ("availpagefile", ctypes.c_ulonglong), ("virtual", ctypes.c_ulonglong),
                        ("availvirtual", ctypes.c_ulonglong), ("ext", ctypes.c_ulonglong)]

        status = _Status()
        status.length = ctypes.sizeof(_Status)
        if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):  # type: ignore[attr-defined]
            return int(status.total)
    except (AttributeError, OSError):
        pass
    return _FALLBACK
