"""Arrays of any rank in a request: nested JSON arrays or binary arrays, their shapes checked
against named sizes (H, D, T, B…) with a pointer at the first entry that does not fit.

A field whose rank may vary (inputs T×D or B×T×D, h_init H or B×H) is a union discriminated by
the depth of the value, so pydantic validates the element types of the one rank the caller
meant, in Rust, and reports only that member's errors."""
from __future__ import annotations

from typing import Annotated, Union

import numpy as np
from pydantic import AfterValidator, Discriminator, Tag

from .errors import pointer

TAG = "array:"            # the union members' tags, as they appear in an error's location


def depth(value) -> int:
    """How deeply lists nest along the first entries (a binary array: its rank)."""
    if isinstance(value, np.ndarray):
        return value.ndim
    d = 0
    while isinstance(value, list):
        d += 1
        value = value[0] if value else None
    return d


def ranked(members: dict[int, type], binary: type | None = None):
    """A value of one of the ranks in `members` ({rank: list type}) or a binary array (a
    BinaryArray model: the field holds its decoded ndarray). The tag is the binary member for
    an object, else the member of the value's depth (clamped to the ranks there are, so a
    too-deep or too-shallow value gets that member's errors). Without a binary member the
    tags are "ints<n>": their errors keep their own messages."""
    ranks = sorted(members)
    kind = "rank" if binary is not None else "ints"

    def tag(value) -> str:
        if isinstance(value, dict) and binary is not None:
            return TAG + "binary"
        return f"{TAG}{kind}{min(max(depth(value), ranks[0]), ranks[-1])}"
    union = [Annotated[t, Tag(f"{TAG}{kind}{r}")] for r, t in members.items()]
    if binary is not None:
        union.append(Annotated[binary, AfterValidator(lambda b: b.data), Tag(TAG + "binary")])
    return Annotated[Union[tuple(union)], Discriminator(tag)]


def strip_tags(loc: tuple, keep_arrays: bool = False) -> tuple:
    """An error's location without the union members' tags: a plain path into the body
    (`keep_arrays`: only the "ints" tags go; base._array_errors reads the others)."""
    return tuple(part for part in loc if not (
        isinstance(part, str) and part.startswith(TAG) and (not keep_arrays or part.startswith(TAG + "ints"))))


def shaped(value, where: tuple, errors: list, axes: tuple[str, ...], sizes: dict[str, int],
           what: str = "") -> np.ndarray | None:
    """`value` (nested lists of numbers, or a decoded binary ndarray) as a float64 array whose
    axes are `axes` (names of sizes; a size not yet in `sizes` is learned from the value and
    added), or None after recording the first mismatch with its pointer."""
    if isinstance(value, np.ndarray):
        return _binary_shape(value, where, errors, axes, sizes, what)
    if depth(value) != len(axes):
        errors.append((pointer(*where), f"must have shape [{', '.join(axes)}]: {len(axes)} levels of "
                                        f"arrays, got {depth(value)}", "shape"))
        return None
    expected = [sizes.get(a) for a in axes]
    try:                                  # the common valid case in one numpy call
        a = np.array(value, dtype=np.float64)
        if a.ndim == len(axes) and 0 not in a.shape and \
                all(e is None or e == n for e, n in zip(expected, a.shape)):
            sizes.update((name, n) for name, n in zip(axes, a.shape))
            return a
    except (ValueError, TypeError, OverflowError):
        pass
    if _walk(value, where, errors, axes, sizes, what, 0):
        return np.array(value, dtype=np.float64)
    return None


def _walk(node, where, errors, axes, sizes, what, level) -> bool:
    """Depth-first: the first list whose length is not its axis's size (learned from the
    first list met at that depth) is the error."""
    if level == len(axes):
        return True
    name = axes[level]
    n = sizes.get(name)
    if not isinstance(node, list):
        errors.append((pointer(*where), "must be a JSON array", "type"))
        return False
    if not node:
        errors.append((pointer(*where), f"must not be empty ({name} ≥ 1)", "size"))
        return False
    if n is not None and len(node) != n:
        errors.append((pointer(*where), _mismatch(what or where[0], level, axes, name, n, len(node)),
                       "shape"))
        return False
    sizes[name] = len(node)
    return all(_walk(child, (*where, i), errors, axes, sizes, what, level + 1)
               for i, child in enumerate(node))


def _binary_shape(a: np.ndarray, where, errors, axes, sizes, what) -> np.ndarray | None:
    if a.ndim != len(axes):
        errors.append((pointer(*where), f"must have shape [{', '.join(axes)}]: got {a.ndim} axes, "
                                        f"expected {len(axes)}", "shape"))
        return None
    for level, (name, n) in enumerate(zip(axes, a.shape)):
        if n == 0:
            errors.append((pointer(*where), f"shape {list(a.shape)} is empty: every axis needs ≥ 1",
                           "size"))
            return None
        want = sizes.get(name)
        if want is not None and n != want:
            errors.append((pointer(*where), f"{what or where[-1]} must have shape "
                                            f"[{', '.join(_extent(x, sizes) for x in axes)}], "
                                            f"got {list(a.shape)}", "shape"))
            return None
        sizes[name] = n
    return a


def _extent(name: str, sizes: dict) -> str:
    return str(sizes[name]) if name in sizes else name


_WORDS = {"B": "sequences", "T": "steps"}


def _mismatch(what, level, axes, name, want, got) -> str:
    shape = f"{what} is [{', '.join(axes)}]"
    word = _WORDS.get(name, "entries")
    if level == 0:
        return f"must have {want} {word} ({name}; {shape}), got {got}"
    return f"has {got} {word}, expected {name} = {want} ({shape})"
