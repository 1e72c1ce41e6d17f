"""Token tags: validation, the tagging scheme (IOB2; IOB1 and BIOES/BILOU converted to IOB2) and the label set.

>>> to_iob2(["I-PER", "I-PER", "B-PER", "O", "I-LOC"], "IOB1")
['B-PER', 'I-PER', 'B-PER', 'O', 'B-LOC']
>>> to_iob2(["S-PER", "O", "B-LOC", "E-LOC"], "BIOES")
['B-PER', 'O', 'B-LOC', 'I-LOC']
>>> label_names({"PER", "LOC"})
['O', 'B-LOC', 'I-LOC', 'B-PER', 'I-PER']

A tag is `O` or PREFIX-TYPE (B, I, and for BIOES E and S, for BILOU L and U). The scheme is found per file:
any E-/S-/L-/U- tag means BIOES (BILOU); an I- tag that begins an entity (after O, at the start of a sentence,
or after another type) means IOB1 (an IOB2 file never has one); otherwise IOB2. Plain code, no torch.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from tuneforge.data.conll import token_line
from tuneforge.data.table import Table
from tuneforge.errors import DataError

TAG = re.compile(r"^(?:O|([BIESLU])-(\S+))$")
SCHEMES = ("IOB2", "IOB1", "BIOES")


def entity_type(tag: str) -> str | None:
    """The type of an IOB2 tag (None for O)."""
    return None if tag == "O" else tag[2:]


def label_names(types: set[str] | list[str]) -> list[str]:
    """O first, then B- and I- of every type in sorted order (both, so the model can tag any entity length)."""
    return ["O"] + [f"{p}-{t}" for t in sorted(types) for p in ("B", "I")]


def detect_scheme(rows: list[list[str]]) -> tuple[str, tuple[int, int] | None]:
    """(scheme, (row, token) of the first tag that decided it, or None for IOB2)."""
    first_iob1 = None
    for r, tags in enumerate(rows):
        previous = "O"
        for i, tag in enumerate(tags):
            prefix = tag[0]
            if prefix in "ESLU":
                return "BIOES", (r, i)
            if prefix == "I" and first_iob1 is None and (previous == "O" or previous[2:] != tag[2:]):
                first_iob1 = (r, i)
            previous = tag
    return ("IOB1", first_iob1) if first_iob1 is not None else ("IOB2", None)


def to_iob2(tags: list[str], scheme: str) -> list[str]:
    """The tags of one sentence in IOB2."""
    if scheme == "IOB2":
        return list(tags)
    out = []
    previous = "O"
    for tag in tags:
        prefix, kind = tag[0], tag[2:]
        if scheme == "BIOES":
            tag = f"B-{kind}" if prefix in "BSU" else f"I-{kind}" if prefix in "IEL" else "O"
        elif prefix == "I" and (previous == "O" or previous[2:] != kind):
            tag = f"B-{kind}"  # IOB1: an I- tag that begins an entity
        out.append(tag)
        previous = tag
    return out


def entity_spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, first word, end word exclusive) of each entity in IOB2 tags, strictly: an entity starts at a B-
    tag and continues over I- tags of its type (an I- tag without its B- starts nothing, as in seqeval's strict
    mode).

    >>> entity_spans(["B-PER", "I-PER", "O", "I-LOC", "B-LOC"])
    [('PER', 0, 2), ('LOC', 4, 5)]
    """
    spans, start, kind = [], None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        if start is not None and not (tag.startswith("I-") and tag[2:] == kind):
            spans.append((kind, start, i))
            start = None
        if tag.startswith("B-"):
            start, kind = i, tag[2:]
    return spans


def _tag_list(table: Table, row: int, column: str, value: Any) -> list[str]:
    if not isinstance(value, (list, tuple)):
        raise DataError(f"{table.where(row)}: column {column!r} holds {type(value).__name__} {str(value)[:40]!r}; "
                        "give a list with one tag per word, e.g. [\"B-PER\", \"I-PER\", \"O\"]")
    out = []
    for i, tag in enumerate(value):
        if isinstance(tag, bool) or not isinstance(tag, (str, int)):
            raise DataError(f"{token_line(table, row, i)}: tag {tag!r} in column {column!r} is not a tag name; use O, "
                            "B-TYPE or I-TYPE")
        if isinstance(tag, int):
            raise DataError(f"{token_line(table, row, i)}: column {column!r} holds integer tag {tag}; a local file "
                            "needs tag names such as B-PER, I-PER and O (integer ids are read as names only from a hub "
                            "dataset's ClassLabel feature)")
        tag = tag.strip()
        if not TAG.match(tag):
            raise DataError(f"{token_line(table, row, i)}: {tag!r} is not a tag; use O or PREFIX-TYPE with prefix B or "
                            "I (IOB2; IOB1 and BIOES with E- and S- are converted), e.g. B-PER")
        out.append(tag)
    return out


def check_sentences(table: Table, tokens_column: str, tags_column: str | None) -> list[int]:
    """Validate every row (in place: tags stripped): tokens a non-empty list of strings, one tag per token.
    Returns the rows with no tokens (dropped by the caller, like empty texts)."""
    empty = []
    tokens = table.columns[tokens_column]
    tags = table.columns[tags_column] if tags_column else None
    for row, words in enumerate(tokens):
        if words is None or (isinstance(words, (list, tuple)) and not words):
            empty.append(row)
            continue
        if not isinstance(words, (list, tuple)) or not all(isinstance(w, str) for w in words):
            bad = next((w for w in words if not isinstance(w, str)), words) if isinstance(words, (list, tuple)) \
                else words
            raise DataError(f"{table.where(row)}: column {tokens_column!r} holds {type(bad).__name__} "
                            f"{str(bad)[:40]!r}; give each sentence as a list of words (strings), e.g. "
                            "[\"Peter\", \"Blackburn\"]")
        if tags is None:
            continue
        if tags[row] is None:
            raise DataError(f"{table.where(row)}: column {tags_column!r} is empty but the sentence has "
                            f"{len(words)} words; give one tag per word")
        row_tags = _tag_list(table, row, tags_column, tags[row])
        if len(row_tags) != len(words):
            raise DataError(f"{table.where(row)}: {len(row_tags)} tags in column {tags_column!r} for {len(words)} "
                            f"words in column {tokens_column!r}; give exactly one tag per word")
        tokens[row] = list(words)
        tags[row] = row_tags
    return empty


def normalise_scheme(table: Table, tags_column: str) -> str | None:
    """Convert the table's tags to IOB2 in place; a line saying so (None when they already were IOB2)."""
    rows = table.columns[tags_column]
    scheme, where = detect_scheme(rows)
    if scheme == "IOB2":
        return None
    for i, tags in enumerate(rows):
        rows[i] = to_iob2(tags, scheme)
    assert where is not None
    what = "E-/S- (or L-/U-) tags" if scheme == "BIOES" else "I- tags that begin entities"
    return f"tags converted from {scheme} to IOB2 ({what}; the first at {token_line(table, *where)})"


def entity_counts(tables: list[Table], tags_column: str) -> Counter:
    """Entities per type over `tables` (IOB2 tags)."""
    counts: Counter = Counter()
    for table in tables:
        for tags in table.columns[tags_column]:
            counts.update(kind for kind, _, _ in entity_spans(tags))
    return counts


def check_known_types(table: Table, tags_column: str, known: set[str], what: str) -> None:
    """Every tag's type must be one of `known` (the training types, or a trained model's)."""
    for row, tags in enumerate(table.columns[tags_column]):
        for i, tag in enumerate(tags):
            kind = entity_type(tag)
            if kind is not None and kind not in known:
                raise DataError(f"{token_line(table, row, i)}: tag {tag!r} has type {kind!r}, which {what} never "
                                f"shows ({what} types: {', '.join(sorted(known)) or 'none'}); fix the tag or add "
                                f"{what} sentences with it")
