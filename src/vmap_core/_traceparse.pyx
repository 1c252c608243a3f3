# cython: freethreading_compatible = True
"""The inner loop of vmap_core.trace: the vmalloc events of a trace, scanned
in C (the events themselves are the three classes below).

parse_chunk() takes whole lines (bytes, ending in a newline) as tracefs
(``trace``, ``trace_pipe``), ``trace-cmd report`` and ``perf script`` print
them, and turns every alloc_vmap_area, free_vmap_area_noflush and
purge_vmap_area_lazy line into an event; it counts the other lines and stops
at the first line of one of these events whose text does not parse.  The
field layouts are the TP_printk() formats of include/trace/events/vmalloc.h.
vmap_core.trace has the same parser in plain Python (regular expressions),
which the tests hold this one to.
"""

cimport cython
from libc.stdint cimport uint64_t
from libc.string cimport memchr, memcmp, memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8

cdef extern from "string.h" nogil:
    void* memmem(const void* haystack, size_t hlen, const void* needle, size_t nlen)

ENOENT_VALUE = (1 << 64) - 2        # (unsigned long)-ENOENT
ERANGE_VALUE = (1 << 64) - 34       # (unsigned long)-ERANGE


cdef class _Event:
    """Common to the three events: cpu, ts (seconds), task, pid, lineno."""
    cdef readonly int cpu
    cdef readonly double ts
    cdef readonly str task
    cdef readonly long long pid
    cdef readonly long long lineno

    # Built with loops, not comprehensions or generator expressions (which
    # Cython 3.3.x may compile to a list comprehension that decrefs an item
    # twice under MemoryError; tests/test_generated_code.py).
    def astuple(self):
        """The fields, in the order of ``_fields``."""
        cdef list out = []
        for f in self._fields:
            out.append(getattr(self, f))
        return tuple(out)

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self.astuple() == other.astuple()

    def __hash__(self):
        return hash((type(self).__name__,) + self.astuple())

    def __repr__(self):
        cdef list parts = []
        for f, v in zip(self._fields, self.astuple()):
            parts.append(f"{f}={v:#x}" if f in self._hex else f"{f}={v!r}")
        body = ", ".join(parts)
        return f"{type(self).__name__}({body})"

    def __reduce__(self):
        return (type(self), self.astuple())


@cython.final
@cython.no_gc
cdef class Alloc(_Event):
    """``alloc_vmap_area: va_start: %lu size=%lu align=%lu vstart=0x%lx
    vend=0x%lx failed=%d``.  On failure ``va_start`` is what the kernel
    returned: ``vend`` (v6.9-v6.15) or a negative errno as unsigned (v6.16+);
    see ``error``."""
    cdef readonly uint64_t va_start, size, align, vstart, vend
    cdef readonly bint failed
    kind = "alloc"
    _fields = ("cpu", "ts", "task", "pid", "lineno", "va_start", "size", "align", "vstart",
               "vend", "failed")
    _hex = ("va_start", "vstart", "vend")

    def __init__(self, cpu, ts, task, pid, lineno, va_start, size, align, vstart, vend, failed):
        self.cpu, self.ts, self.task, self.pid, self.lineno = cpu, ts, task, pid, lineno
        self.va_start, self.size, self.align = va_start, size, align
        self.vstart, self.vend, self.failed = vstart, vend, failed

    @property
    def error(self):
        """None for a success; "ENOENT" or "ERANGE" (v6.16+), "vend" (the
        failure value before v6.16), or "unknown" for a failure."""
        if not self.failed:
            return None
        if self.va_start == ENOENT_VALUE:
            return "ENOENT"
        if self.va_start == ERANGE_VALUE:
            return "ERANGE"
        if self.va_start == self.vend:
            return "vend"
        return "unknown"


@cython.final
@cython.no_gc
cdef class Free(_Event):
    """``free_vmap_area_noflush: va_start=0x%lx nr_lazy=%lu nr_lazy_max=%lu``
    (nr_lazy: the lazy pages after this free, vmap_lazy_nr)."""
    cdef readonly uint64_t va_start, nr_lazy, nr_lazy_max
    kind = "free"
    _fields = ("cpu", "ts", "task", "pid", "lineno", "va_start", "nr_lazy", "nr_lazy_max")
    _hex = ("va_start",)

    def __init__(self, cpu, ts, task, pid, lineno, va_start, nr_lazy, nr_lazy_max):
        self.cpu, self.ts, self.task, self.pid, self.lineno = cpu, ts, task, pid, lineno
        self.va_start, self.nr_lazy, self.nr_lazy_max = va_start, nr_lazy, nr_lazy_max


@cython.final
@cython.no_gc
cdef class Purge(_Event):
    """``purge_vmap_area_lazy: start=0x%lx end=0x%lx num_purged=%u``; a purge
    that found nothing prints start=0xffffffffffffffff end=0x0."""
    cdef readonly uint64_t start, end, num_purged
    kind = "purge"
    _fields = ("cpu", "ts", "task", "pid", "lineno", "start", "end", "num_purged")
    _hex = ("start", "end")

    def __init__(self, cpu, ts, task, pid, lineno, start, end, num_purged):
        self.cpu, self.ts, self.task, self.pid, self.lineno = cpu, ts, task, pid, lineno
        self.start, self.end, self.num_purged = start, end, num_purged


# -- scanning ------------------------------------------------------------------

cdef inline char _back(const char* p) noexcept nogil:
    """The byte before p."""
    return (p - 1)[0]


cdef inline bint _space(char c) noexcept nogil:
    return c == c' ' or c == c'\t'


cdef inline bint _digit(char c) noexcept nogil:
    return c'0' <= c <= c'9'


cdef inline const char* _dec(const char* p, const char* e, uint64_t* out) noexcept nogil:
    """A decimal uint64 at p; NULL if none or it overflows."""
    cdef uint64_t v = 0
    cdef uint64_t d
    cdef const char* s = p
    while p < e and _digit(p[0]):
        d = <uint64_t>(p[0] - c'0')
        if v > (0xFFFFFFFFFFFFFFFFULL - d) // 10:
            return NULL
        v = v * 10 + d
        p += 1
    if p == s:
        return NULL
    out[0] = v
    return p


cdef inline const char* _hex(const char* p, const char* e, uint64_t* out) noexcept nogil:
    """A hex uint64 at p (no 0x); NULL if none or more than 16 digits."""
    cdef uint64_t v = 0
    cdef int n = 0
    cdef char c
    while p < e:
        c = p[0]
        if c'0' <= c <= c'9':
            v = (v << 4) | <uint64_t>(c - c'0')
        elif c'a' <= c <= c'f':
            v = (v << 4) | <uint64_t>(c - c'a' + 10)
        elif c'A' <= c <= c'F':
            v = (v << 4) | <uint64_t>(c - c'A' + 10)
        else:
            break
        n += 1
        if n > 16:
            return NULL
        p += 1
    if n == 0:
        return NULL
    out[0] = v
    return p


cdef inline const char* _lit(const char* p, const char* e, const char* s, size_t n) noexcept nogil:
    """p past the literal s[:n], or NULL."""
    if <size_t>(e - p) < n or memcmp(p, s, n) != 0:
        return NULL
    return p + n


cdef enum:
    EV_NONE = 0
    EV_ALLOC = 1
    EV_FREE = 2
    EV_PURGE = 3

ctypedef struct prefix_t:
    const char* task
    Py_ssize_t task_len
    uint64_t pid
    uint64_t cpu
    double ts


cdef double[20] _POW10
_POW10[0] = 1.0
for _i in range(1, 20):
    _POW10[_i] = _POW10[_i - 1] * 10.0


cdef int _event_at(const char* line, const char* q, const char* e, const char* hit,
                   prefix_t* pre, const char** fields) noexcept nogil:
    """hit points at "vmap_area" inside [q, e).  If the line is one of our
    events there (name right after the timestamp, "task-pid [cpu] flags
    ts: name:" or perf's "comm pid [cpu] ts: vmalloc:name:"), fill pre and
    fields (just past "name:") and return its EV_ kind; else EV_NONE."""
    cdef const char* n0
    cdef const char* r
    cdef const char* t
    cdef int kind
    cdef uint64_t ip = 0, fp = 0
    cdef int fdig = 0
    cdef const char* dot
    # The name around "vmap_area".
    if hit - q >= 6 and memcmp(hit - 6, b"alloc_", 6) == 0 and _lit(hit, e, b"vmap_area:", 10) != NULL:
        kind, n0, fields[0] = EV_ALLOC, hit - 6, hit + 10
    elif hit - q >= 5 and memcmp(hit - 5, b"free_", 5) == 0 and \
            _lit(hit, e, b"vmap_area_noflush:", 18) != NULL:
        kind, n0, fields[0] = EV_FREE, hit - 5, hit + 18
    elif hit - q >= 6 and memcmp(hit - 6, b"purge_", 6) == 0 and \
            _lit(hit, e, b"vmap_area_lazy:", 15) != NULL:
        kind, n0, fields[0] = EV_PURGE, hit - 6, hit + 15
    else:
        return EV_NONE
    # Backwards: [vmalloc:] spaces ':' timestamp spaces [flags spaces] ']' cpu '['.
    r = n0
    if r - q >= 8 and memcmp(r - 8, b"vmalloc:", 8) == 0:
        r -= 8
    while r > q and _space(_back(r)):
        r -= 1
    if r == n0 or r <= q or _back(r) != c':':
        return EV_NONE
    r -= 1
    t = r
    dot = NULL
    while r > q and (_digit(_back(r)) or _back(r) == c'.'):
        r -= 1
        if r[0] == c'.':
            if dot != NULL:
                return EV_NONE
            dot = r
    if r == t or (r > q and not _space(_back(r))):
        return EV_NONE
    # the timestamp [r, t): digits * 10**-fdig, as one correctly rounded
    # division when the digits fit in a double exactly (as float(text) reads it)
    while r < t and r[0] != c'.':
        ip = ip * 10 + <uint64_t>(r[0] - c'0')
        r += 1
    if r < t:
        r += 1
        while r < t:
            if fdig < 19:
                fp = fp * 10 + <uint64_t>(r[0] - c'0')
                fdig += 1
            r += 1
    if fdig <= 15 and ip <= (9007199254740992ULL - fp) // <uint64_t>_POW10[fdig]:
        pre.ts = <double>(ip * <uint64_t>_POW10[fdig] + fp) / _POW10[fdig]
    else:
        pre.ts = <double>ip + <double>fp / _POW10[fdig]
    # back to the start of the timestamp
    r = t
    while r > q and (_digit(_back(r)) or _back(r) == c'.'):
        r -= 1
    while r > q and _space(_back(r)):
        r -= 1
    if r > q and _back(r) != c']':             # latency flags such as "....." or "d..2."
        while r > q and not _space(_back(r)):
            r -= 1
        while r > q and _space(_back(r)):
            r -= 1
    if r <= q or _back(r) != c']':
        return EV_NONE
    r -= 1
    t = r
    while r > q and _digit(_back(r)):
        r -= 1
    if r == t or r <= q or _back(r) != c'[':
        return EV_NONE
    _dec(r, t, &pre.cpu)
    r -= 1
    while r > q and _space(_back(r)):
        r -= 1
    if r > q and _back(r) == c')':             # trace's record-tgid column "(  1977)"
        while r > q and _back(r) != c'(':
            r -= 1
        if r <= q:
            return EV_NONE
        r -= 1
        while r > q and _space(_back(r)):
            r -= 1
    # pid (perf may print pid/tid: the task's id is the last number)
    t = r
    while r > q and _digit(_back(r)):
        r -= 1
    if r == t:
        return EV_NONE
    _dec(r, t, &pre.pid)
    if r > q and _back(r) == c'/':
        r -= 1
        while r > q and _digit(_back(r)):
            r -= 1
    if r > q and _back(r) == c'-':             # tracefs and trace-cmd: "task-pid"
        r -= 1
    elif r > q and _space(_back(r)):           # perf script: "comm pid"
        while r > q and _space(_back(r)):
            r -= 1
    else:
        return EV_NONE
    pre.task = q
    pre.task_len = r - q
    return kind


cdef const char* _alloc_fields(const char* p, const char* e, uint64_t* v) noexcept nogil:
    while p < e and _space(p[0]):
        p += 1
    p = _lit(p, e, b"va_start: ", 10)
    if p != NULL: p = _dec(p, e, &v[0])
    if p != NULL: p = _lit(p, e, b" size=", 6)
    if p != NULL: p = _dec(p, e, &v[1])
    if p != NULL: p = _lit(p, e, b" align=", 7)
    if p != NULL: p = _dec(p, e, &v[2])
    if p != NULL: p = _lit(p, e, b" vstart=0x", 10)
    if p != NULL: p = _hex(p, e, &v[3])
    if p != NULL: p = _lit(p, e, b" vend=0x", 8)
    if p != NULL: p = _hex(p, e, &v[4])
    if p != NULL: p = _lit(p, e, b" failed=", 8)
    if p != NULL: p = _dec(p, e, &v[5])
    return p


cdef const char* _free_fields(const char* p, const char* e, uint64_t* v) noexcept nogil:
    while p < e and _space(p[0]):
        p += 1
    p = _lit(p, e, b"va_start=0x", 11)
    if p != NULL: p = _hex(p, e, &v[0])
    if p != NULL: p = _lit(p, e, b" nr_lazy=", 9)
    if p != NULL: p = _dec(p, e, &v[1])
    if p != NULL: p = _lit(p, e, b" nr_lazy_max=", 13)
    if p != NULL: p = _dec(p, e, &v[2])
    return p


cdef const char* _purge_fields(const char* p, const char* e, uint64_t* v) noexcept nogil:
    while p < e and _space(p[0]):
        p += 1
    p = _lit(p, e, b"start=0x", 8)
    if p != NULL: p = _hex(p, e, &v[0])
    if p != NULL: p = _lit(p, e, b" end=0x", 7)
    if p != NULL: p = _hex(p, e, &v[1])
    if p != NULL: p = _lit(p, e, b" num_purged=", 12)
    if p != NULL: p = _dec(p, e, &v[2])
    return p


_NAMES = {EV_ALLOC: "alloc_vmap_area", EV_FREE: "free_vmap_area_noflush",
          EV_PURGE: "purge_vmap_area_lazy"}


def parse_chunk(bytes buf, long long lineno, bint keep_other=False):
    """Scan whole lines of ``buf`` (the last one ends in a newline; lineno is
    the number of its first line).  Returns ``(events, lineno, header, other,
    kept, bad)``: the events in order; the number of the next line; how many
    lines began with '#' and how many others were skipped (blank lines, other
    events, tool output); with keep_other the skipped lines as (lineno, text);
    and None, or (lineno, text, event name) for the first line of one of our
    events that does not parse, where scanning stopped."""
    cdef const char* p = PyBytes_AS_STRING(buf)
    cdef const char* end = p + PyBytes_GET_SIZE(buf)
    cdef const char* e
    cdef const char* line
    cdef const char* q
    cdef const char* hit
    cdef const char* fields = NULL
    cdef const char* f
    cdef prefix_t pre
    cdef uint64_t v[6]
    cdef int kind
    cdef long long header = 0
    cdef long long other = 0
    cdef list events = []
    cdef list kept = [] if keep_other else None
    cdef Alloc a
    cdef Free fr
    cdef Purge pg
    cdef str task
    memset(v, 0, sizeof(v))
    memset(&pre, 0, sizeof(pre))
    while p < end:
        e = <const char*>memchr(p, c'\n', end - p)
        if e == NULL:
            e = end
        line = p
        p = e + 1
        if e > line and _back(e) == c'\r':
            e -= 1
        q = line
        while q < e and _space(q[0]):
            q += 1
        kind = EV_NONE
        if q < e and q[0] != c'#':
            hit = q
            while True:
                hit = <const char*>memmem(hit, e - hit, b"vmap_area", 9)
                if hit == NULL:
                    break
                kind = _event_at(line, q, e, hit, &pre, &fields)
                if kind != EV_NONE:
                    break
                hit += 9
        if kind == EV_NONE:
            if q < e and q[0] == c'#':
                header += 1
            else:
                other += 1
            if keep_other:
                kept.append((lineno, line[:e - line].decode("utf-8", "replace")))
            lineno += 1
            continue
        if kind == EV_ALLOC:
            f = _alloc_fields(fields, e, v)
        elif kind == EV_FREE:
            f = _free_fields(fields, e, v)
        else:
            f = _purge_fields(fields, e, v)
        if f != NULL:
            while f < e and _space(f[0]):
                f += 1
        if f == NULL or f != e or pre.cpu > 0x7FFFFFFF or pre.pid > 0x7FFFFFFFFFFFFFFF:
            return (events, lineno, header, other, kept,
                    (lineno, line[:e - line].decode("utf-8", "replace"), _NAMES[kind]))
        task = PyUnicode_DecodeUTF8(pre.task, pre.task_len, "replace")
        if kind == EV_ALLOC:
            a = Alloc.__new__(Alloc)
            a.cpu, a.ts, a.task, a.pid, a.lineno = <int>pre.cpu, pre.ts, task, <long long>pre.pid, lineno
            a.va_start, a.size, a.align, a.vstart, a.vend = v[0], v[1], v[2], v[3], v[4]
            a.failed = v[5] != 0
            events.append(a)
        elif kind == EV_FREE:
            fr = Free.__new__(Free)
            fr.cpu, fr.ts, fr.task, fr.pid, fr.lineno = <int>pre.cpu, pre.ts, task, <long long>pre.pid, lineno
            fr.va_start, fr.nr_lazy, fr.nr_lazy_max = v[0], v[1], v[2]
            events.append(fr)
        else:
            pg = Purge.__new__(Purge)
            pg.cpu, pg.ts, pg.task, pg.pid, pg.lineno = <int>pre.cpu, pre.ts, task, <long long>pre.pid, lineno
            pg.start, pg.end, pg.num_purged = v[0], v[1], v[2]
            events.append(pg)
        lineno += 1
    return (events, lineno, header, other, kept, None)
