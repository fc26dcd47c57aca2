"""Validation of COCO compressed RLE strings before they reach pycocotools.

pycocotools decodes whatever it is given: a malformed ``counts`` string makes it read past
the string or return a mask of uninitialised memory, and a huge ``size`` allocates without
limit. Messages come from other processes, so every :class:`~perception.bus.schema.Rle` is
checked on construction and decode. No library validates this format, hence this module:
it parses the string exactly as pycocotools' ``rleFrString`` does (6-bit groups from
``'0'``, 5 data bits, a continuation bit, sign extension, counts after the second delta
coded against the count two places back), vectorised with NumPy, and for a message's masks
all in one pass (:func:`validate_rles`: a fixed cost of some twenty array operations per
call, which per mask was most of a detections message's decode; a message of few
characters is checked in plain Python instead, which costs less on a CPU that just woke).

Before either, a message's masks take a native fast path (:func:`_check_native`): a regular
expression screens the strings, and faster-coco-eval's C++ ``rleFrString`` (a dependency
already, for evaluation) decodes them; only masks that pass are accepted there, and anything
else goes on to the checks above, which decide and name the error. A 26-mask detections
message: 0.07 ms instead of 0.42 ms warm, 0.27 ms instead of 0.8 ms on a CPU that just woke.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

try:  # the C++ decoder of faster-coco-eval: counts strings -> run lengths, as pycocotools reads them
    from faster_coco_eval.mask_api_new_cpp import toUncompressedRLE as _native_runs
except ImportError:  # (another version without it: the NumPy and Python checks do it all)
    _native_runs: Callable[[list[dict]], list[dict]] | None = None  # type: ignore[no-redef]

MAX_MASK_PIXELS = 8192 * 8192
#: the most 6-bit groups a value may take. pycocotools' ``rleFrString`` shifts each group and
#: the sign in C ``int``: up to six groups (30 bits with the sign) it reads a value exactly,
#: past that the shifts overflow and it reads another value than this module does, which
#: a crafted string turns into counts that cover more than the mask, and a decode that
#: writes past its buffer (``tests/reliability/test_fuzz.py`` holds one). Every run of a mask
#: of up to ``MAX_MASK_PIXELS`` fits in six groups, as pycocotools writes it.
MAX_GROUPS = 6


def _runs(text: bytes, firsts: np.ndarray, check: bool) -> tuple[np.ndarray, np.ndarray]:
    """Run lengths of the strings joined in ``text`` (string ``i`` starts at byte
    ``firsts[i]``), and the index of each string's first run (``len(runs)`` for an empty
    string at the end)."""
    raw8 = np.frombuffer(text, dtype=np.uint8) - np.uint8(48)
    if raw8.size == 0:
        return np.zeros(0, np.int64), np.zeros(len(firsts), np.int64)
    if check and raw8.max() > 63:  # below '0' wraps round to 208 and up
        raise ValueError("RLE counts hold characters outside '0'..'o'")
    raw = raw8.astype(np.int64)
    last = (raw & 0x20) == 0  # the last 6-bit group of a value
    string_ends = np.append(firsts[1:], raw.size) - 1
    nonempty = string_ends >= firsts
    if check and not last[string_ends[nonempty]].all():
        raise ValueError("RLE counts end in the middle of a value")
    ends = np.flatnonzero(last)
    starts = np.empty_like(ends)
    starts[0], starts[1:] = 0, ends[:-1] + 1
    groups = ends - starts + 1
    if check and groups.max() > MAX_GROUPS:
        raise ValueError(f"RLE counts hold a value longer than {MAX_GROUPS} groups")
    k = np.arange(raw.size) - np.repeat(starts, groups)
    values = np.add.reduceat((raw & 0x1F) << (5 * k), starts)
    values -= ((raw[ends] & 0x10) != 0).astype(np.int64) << (5 * groups)  # sign extension
    cnts = values.copy()
    if len(firsts) == 1:  # one string: no places to find (the tracker parses masks one by one)
        if cnts.size > 3:
            cnts[1::2] = np.cumsum(values[1::2])
            cnts[2::2] = np.cumsum(values[2::2])
        return cnts, np.zeros(1, np.int64)
    first_run = np.searchsorted(starts, firsts)  # each string's first value
    owner = np.repeat(np.arange(len(firsts)), np.diff(np.append(first_run, values.size)))
    j = np.arange(values.size) - first_run[owner]  # a value's place in its own string
    # from place 3 on a count is a delta against the count two places back: a cumulative sum
    # along each string's odd places and along its even places from 2, restarted per string
    for chain in ((j % 2 == 1), (j % 2 == 0) & (j >= 2)):
        total = np.cumsum(np.where(chain, values, 0))
        before = np.concatenate([[0], total])[first_run]  # the sum of the strings before
        cnts[chain] = (total - before[owner])[chain]
    return cnts, first_run


def rle_counts(counts: str, check: bool = True) -> np.ndarray:
    """The run lengths encoded in a compressed ``counts`` string, as int64.

    Raises ValueError when the string is not a complete, well-formed encoding; ``check``
    False skips those checks, for strings pycocotools made in this process.
    """
    return _runs(counts.encode("latin-1", errors="replace"), np.zeros(1, np.int64), check)[0]


def validate_rles(masks: Sequence[tuple[tuple[int, int], str]]) -> None:
    """Raise ValueError, naming the first bad mask's place, unless each ``(size, counts)``
    encodes exactly ``size[0] * size[1]`` pixels."""
    try:
        _check_together(masks)
    except ValueError:  # which one: the first that fails alone
        for i, (size, counts) in enumerate(masks):
            try:
                validate_rle(size, counts)
            except ValueError as alone:
                raise ValueError(f"mask {i}: {alone}") from None
        raise


def _check_together(masks: Sequence[tuple[tuple[int, int], str]]) -> None:
    for h, w in (size for size, _ in masks):
        if h < 0 or w < 0 or h * w > MAX_MASK_PIXELS:
            raise ValueError(f"RLE size {h}x{w} is outside 0..{MAX_MASK_PIXELS} pixels")
    if not masks or _check_native(masks):
        return
    if sum(len(c) for _, c in masks) <= PLAIN_PYTHON_CHARS:
        _check_plain(masks)
    else:
        _check_vectorised(masks)


#: up to this many characters in all of a message's masks, :func:`_check_plain` checks them:
#: a node that just woke up (each does, once a frame) runs some twenty NumPy calls at a
#: few times their warm cost, and a 21-mask detections message of 1 400 characters took
#: 0.59 ms that way against 0.25 ms in plain Python (warm: 0.15 against 0.19 ms). Above it
#: the per-character cost of plain Python (0.13 us) loses.
PLAIN_PYTHON_CHARS = 3000


#: What the native decoder is never given: a character outside '0'..'o', or a value of more
#: than ``MAX_GROUPS`` 6-bit groups (six continuation characters 'P'..'o' in a row), which
#: the full checks reject anyway.
#: Screened with ``bytes.translate`` (a table lookup per byte in C; a regular expression
#: took 0.1 ms for 2 000 characters): the valid characters deleted leave nothing, and with
#: every continuation character made ``P`` and every other ``0`` no ``PPPPPP`` is left.
_VALID = bytes(range(ord("0"), ord("o") + 1))
_GROUPS = bytes(ord("P") if ord("P") <= b <= ord("o") else ord("0") for b in range(256))


def _check_native(masks: Sequence[tuple[tuple[int, int], str]]) -> bool:
    """True when every mask is valid, decided in C++; False when undecided (the other checks
    then decide, and name what is wrong). Sound: a string that passes the screen is read by
    ``rleFrString`` exactly as :func:`_runs` reads it, except that each count is cut to 32
    bits; a count that was negative or too large is still in the list, cut or not, as a
    value above ``MAX_MASK_PIXELS`` (counts of at most 30 bits plus one at most that size),
    so the sum of a mask's counts equals ``h * w`` only when every count is the true one and
    none is negative."""
    if _native_runs is None:
        return False
    for _, counts in masks:  # each must end on a value's last group (and so within itself)
        if counts and counts[-1] >= "P":
            return False
    try:
        text = "".join(c for _, c in masks).encode("ascii")
    except UnicodeEncodeError:
        return False
    if text.translate(None, _VALID) or b"PPPPPP" in text.translate(_GROUPS):
        return False
    try:
        runs = _native_runs([{"size": [h, w], "counts": c} for (h, w), c in masks])
    except (ValueError, RuntimeError):  # it checks some things itself (counts past h * w)
        return False
    return all(sum(r["counts"]) == h * w for r, ((h, w), _) in zip(runs, masks, strict=True))


def _check_plain(masks: Sequence[tuple[tuple[int, int], str]]) -> None:
    """The checks of :func:`_check_vectorised` value by value, as ``rleFrString`` reads
    them (the same strings pass; ``tests/reliability/test_fuzz.py`` holds the two to it)."""
    for (h, w), counts in masks:
        x = k = m = covered = before = last = 0  # value so far, its groups; counts made; the two last
        for ch in counts.encode("latin-1", errors="replace"):
            c = ch - 48
            if c < 0 or c > 63:
                raise ValueError("RLE counts hold characters outside '0'..'o'")
            x |= (c & 0x1F) << (5 * k)
            k += 1
            if c & 0x20:  # more groups follow
                if k == MAX_GROUPS:
                    raise ValueError(f"RLE counts hold a value longer than {MAX_GROUPS} groups")
                continue
            if c & 0x10:  # sign extension
                x -= 1 << (5 * k)
            if m > 2:
                x += before  # a delta against the count two places back
            if x < 0:
                raise ValueError("RLE counts decode to a negative run length")
            covered += x
            before, last = last, x
            m += 1
            x = k = 0
        if k:
            raise ValueError("RLE counts end in the middle of a value")
        if covered != h * w:
            raise ValueError("RLE runs do not cover their sizes")


def _check_vectorised(masks: Sequence[tuple[tuple[int, int], str]]) -> None:
    texts = [c.encode("latin-1", errors="replace") for _, c in masks]
    firsts = np.cumsum([0] + [len(t) for t in texts[:-1]], dtype=np.int64)
    cnts, first_run = _runs(b"".join(texts), firsts, check=True)
    if cnts.size and cnts.min() < 0:
        raise ValueError("RLE counts decode to a negative run length")
    sums = np.add.reduceat(np.append(cnts, 0), first_run)
    sums[np.diff(np.append(first_run, cnts.size)) == 0] = 0  # empty strings cover nothing
    if any(int(n) != h * w for n, ((h, w), _) in zip(sums, masks, strict=True)):
        raise ValueError("RLE runs do not cover their sizes")


def validate_rle(size: tuple[int, int], counts: str) -> None:
    """Raise ValueError unless ``counts`` encodes exactly ``size[0] * size[1]`` pixels (the
    checks of :func:`validate_rles` for one mask, without its bookkeeping: 37 instead of 53 µs
    for a 227-character mask, and every Rle made outside a message decode comes here)."""
    h, w = size
    if h < 0 or w < 0 or h * w > MAX_MASK_PIXELS:
        raise ValueError(f"RLE size {h}x{w} is outside 0..{MAX_MASK_PIXELS} pixels")
    cnts = rle_counts(counts)
    if cnts.size and cnts.min() < 0:
        raise ValueError("RLE counts decode to a negative run length")
    if int(cnts.sum()) != h * w:
        raise ValueError(f"RLE runs cover {int(cnts.sum())} pixels, size {h}x{w} needs {h * w}")
