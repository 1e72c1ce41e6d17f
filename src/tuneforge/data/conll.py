"""CoNLL-style token files: one token per line with its tag in the last whitespace-separated column, a blank
line between sentences, `-DOCSTART-` lines skipped (CoNLL-2003's document markers).

>>> text = "EU B-ORG\\nrejects O\\n\\nPeter B-PER\\nBlackburn I-PER\\n"
>>> table = parse_conll("train.conll", text, "tokens", "ner_tags")
>>> table.columns["tokens"], table.columns["ner_tags"], table.where(1)
([['EU', 'rejects'], ['Peter', 'Blackburn']], [['B-ORG', 'O'], ['B-PER', 'I-PER']], 'train.conll, line 4')

Middle columns (CoNLL-2003's part-of-speech and chunk tags) are ignored. Each row of the table is a sentence,
located at the line of its first token; token i of that sentence is on that line + i (`token_line`).
"""

from __future__ import annotations

from pathlib import Path

from tuneforge.data.table import Table
from tuneforge.errors import DataError

CONLL_SUFFIXES = (".conll", ".txt")  # .txt only where the task reads token files (CoNLL-2003 ships train.txt)


def is_conll(source: str) -> bool:
    """Whether a table came from a CoNLL file (its source names the file)."""
    return Path(source).suffix.lower() in CONLL_SUFFIXES


def token_line(table: Table, row: int, token: int) -> str:
    """Where token `token` of sentence `row` is: its own line in a CoNLL file, else the row and token number."""
    if is_conll(table.source) and table.lines is not None:
        return f"{table.source}, line {int(table.lines[row]) + token}"
    return f"{table.where(row)}, token {token + 1}"


def parse_conll(path: str | Path, text: str, tokens_column: str, tags_column: str) -> Table:
    """The sentences of a CoNLL file's decoded text as a Table of two list columns."""
    tokens: list[list[str]] = []
    tags: list[list[str]] = []
    lines: list[int] = []
    words: list[str] = []
    labels: list[str] = []

    def close() -> None:
        if words:
            tokens.append(words[:])
            tags.append(labels[:])
            words.clear()
            labels.clear()

    for number, line in enumerate(text.split("\n"), 1):
        fields = line.split()
        if not fields:
            close()
            continue
        if fields[0] == "-DOCSTART-":
            close()
            continue
        if len(fields) < 2:
            raise DataError(f"{path}: line {number}: {line.strip()[:40]!r} has one column; a CoNLL line is a token "
                            "and its tag separated by whitespace (the tag in the last column), with a blank line "
                            "between sentences")
        if not words:
            lines.append(number)
        words.append(fields[0])
        labels.append(fields[-1])
    close()
    if not tokens:
        raise DataError(f"{path}: no sentences (a CoNLL file holds 'token tag' lines, sentences separated by blank "
                        "lines)")
    return Table(str(path), {tokens_column: tokens, tags_column: tags}, lines)
