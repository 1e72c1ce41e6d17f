"""Question-answering data: the nested SQuAD JSON file flattened into rows, and the answers of every row checked
against its context (one DataError line per problem, naming the file, the question id and how to fix it).

>>> from tuneforge.data.squad import is_squad, flatten_squad
>>> doc = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": "Paris is in France.", "qas": [
...     {"id": "q1", "question": "Where is Paris?", "answers": [{"text": "France", "answer_start": 12}]},
...     {"id": "q2", "question": "Where is Rome?", "answers": [], "is_impossible": True}]}]}]}
>>> is_squad(doc)
True
>>> table = flatten_squad("dev.json", doc, "")
>>> table.columns["answers"]
[{'text': ['France'], 'answer_start': [12]}, {'text': [], 'answer_start': []}]

Rows follow the Hugging Face `squad` / `squad_v2` datasets: `id`, `title`, `question`, `context` and `answers`
as `{"text": [...], "answer_start": [...]}` (character offsets into the context; empty lists: no answer, SQuAD
v2). Flat JSON Lines, CSV (the answers cell holding that object as JSON), Parquet and hub rows use the same
shape; a list of `{"text", "answer_start"}` objects is accepted too. No torch here.
"""

from __future__ import annotations

import json
from typing import Any

from tuneforge.data.table import Table
from tuneforge.errors import DataError

ANSWERS_SHAPE = '{"text": ["..."], "answer_start": [0]}'


def is_squad(doc: Any) -> bool:
    """A parsed .json document in the nested SQuAD layout: {"data": [{"paragraphs": [...]}, ...]}."""
    data = doc.get("data") if isinstance(doc, dict) else None
    return isinstance(data, list) and bool(data) and all(isinstance(a, dict) and "paragraphs" in a for a in data)


def _line_finder(text: str) -> Any:
    """line_of(question id): the 1-based line where the id first appears after the previous one (ids are
    searched in file order, so a repeated string elsewhere costs nothing); None when the file is one line."""
    if text.count("\n") < 2:
        return lambda _id: None
    pos = 0

    def line_of(qid: Any) -> int | None:
        nonlocal pos
        found = text.find(json.dumps(str(qid)), pos)
        if found < 0:
            return None
        pos = found + 1
        return text.count("\n", 0, found) + 1

    return line_of


def flatten_squad(path: str, doc: dict[str, Any], text: str) -> Table:
    """One row per question of a nested SQuAD document (`text`: the file's text, for line numbers)."""
    line_of = _line_finder(text)
    rows: dict[str, list[Any]] = {"id": [], "title": [], "question": [], "context": [], "answers": []}
    lines: list[int | None] = []
    for i, article in enumerate(doc["data"]):
        paragraphs = article.get("paragraphs")
        if not isinstance(paragraphs, list):
            raise DataError(f"{path}: data[{i}].paragraphs is not a list; each article holds a list of "
                            '{"context": "...", "qas": [...]} paragraphs')
        for j, paragraph in enumerate(paragraphs):
            at = f"data[{i}].paragraphs[{j}]"
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("context"), str):
                raise DataError(f"{path}: {at}: no 'context' text; every paragraph needs a context and its qas")
            qas = paragraph.get("qas")
            if not isinstance(qas, list):
                raise DataError(f"{path}: {at}: no 'qas' list; give the paragraph's questions as "
                                '"qas": [{"id": ..., "question": ..., "answers": [...]}]')
            for k, qa in enumerate(qas):
                qid = qa.get("id") if isinstance(qa, dict) else None
                where = f"{path}, question id {qid!r}" if qid is not None else f"{path}: {at}.qas[{k}]"
                if qid is None:
                    raise DataError(f"{where}: no 'id' field; every question needs a unique id")
                if not isinstance(qa.get("question"), str):
                    raise DataError(f"{where}: no 'question' text; add the question")
                if "answers" not in qa and not qa.get("is_impossible"):
                    raise DataError(f"{where}: no 'answers' field; give [] with \"is_impossible\": true for a "
                                    "question without an answer")
                answers = [] if qa.get("is_impossible") else qa.get("answers")
                if not isinstance(answers, list) or not all(isinstance(a, dict) for a in answers):
                    raise DataError(f"{where}: 'answers' must be a list of "
                                    '{"text": "...", "answer_start": N} objects')
                for a in answers:
                    missing = [key for key in ("text", "answer_start") if key not in a]
                    if missing:
                        raise DataError(f"{where}: an answer has no {' or '.join(repr(m) for m in missing)} "
                                        'field; each answer is {"text": "...", "answer_start": N}')
                rows["id"].append(str(qid))
                rows["title"].append(article.get("title"))
                rows["question"].append(qa["question"])
                rows["context"].append(paragraph["context"])
                rows["answers"].append({"text": [a["text"] for a in answers],
                                        "answer_start": [a["answer_start"] for a in answers]})
                lines.append(line_of(qid))
    if not rows["id"]:
        raise DataError(f"{path}: the SQuAD file holds no questions")
    return Table(path, rows, lines if all(n is not None for n in lines) else None)


def question_where(table: Table, i: int, id_column: str = "id") -> str:
    """Where row `i` is, with its question id when the data has one: 'dev.json, line 40, question id "q7"'."""
    ids = table.columns.get(id_column)
    qid = ids[i] if ids is not None else None
    return table.where(i) + (f", question id {str(qid)!r}" if qid not in (None, "") else "")


def _parse(value: Any, where: str, column: str) -> tuple[list[Any], list[Any]]:
    """(texts, starts) of one answers cell in any accepted shape."""
    if isinstance(value, str):  # CSV: the object as JSON text
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise DataError(f"{where}: column {column!r} holds {value[:60]!r}, not JSON; write the answers as "
                            f"{ANSWERS_SHAPE} (empty lists: no answer)") from None
    if isinstance(value, list) and all(isinstance(a, dict) for a in value):
        value = {"text": [a.get("text") for a in value], "answer_start": [a.get("answer_start") for a in value]}
    if not isinstance(value, dict):
        what = "is empty" if value is None else f"holds {type(value).__name__} {str(value)[:40]!r}"
        raise DataError(f"{where}: column {column!r} {what}; give {ANSWERS_SHAPE} (empty lists for a question "
                        "without an answer)")
    missing = [k for k in ("text", "answer_start") if k not in value]
    if missing:
        raise DataError(f"{where}: column {column!r} has no {' or '.join(repr(m) for m in missing)} field; give "
                        f"{ANSWERS_SHAPE}")
    texts, starts = value["text"], value["answer_start"]
    texts = [texts] if isinstance(texts, str) else list(texts or [])
    starts = [starts] if isinstance(starts, int) else list(starts or [])
    if len(texts) != len(starts):
        raise DataError(f"{where}: column {column!r} has {len(texts)} answer texts and {len(starts)} answer_start "
                        "values; give one start per text")
    return texts, starts


def check_answers(table: Table, context_column: str, answers_column: str) -> int:
    """Normalise every row's answers to {"text": [...], "answer_start": [...]} (in place) and check that each
    answer_start points at its text in the context; returns how many questions have no answer."""
    contexts, column = table.columns[context_column], table.columns[answers_column]
    out, unanswerable = [], 0
    for i, value in enumerate(column):
        where = question_where(table, i)
        texts, starts = _parse(value, where, answers_column)
        context = contexts[i]
        for text, start in zip(texts, starts):
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{where}: an answer text is empty; remove it (empty lists mean no answer)")
            if isinstance(start, bool) or not isinstance(start, int) or start < 0:
                raise DataError(f"{where}: answer_start {start!r} of {text!r} is not a character offset (an integer "
                                "from 0); give the offset of the answer in the context")
            found = context[start:start + len(text)]
            if found != text:
                places = _occurrences(context, text)
                fix = (f"set answer_start to {min(places, key=lambda p: abs(p - start))} (where the text occurs)"
                       if places else "the text does not occur in the context at all; fix the answer text or the "
                                      "context")
                raise DataError(f"{where}: answer_start {start} does not point at the answer {text!r}: the context "
                                f"holds {found!r} there; {fix}")
        unanswerable += not texts
        out.append({"text": list(texts), "answer_start": list(starts)})
    table.columns[answers_column] = out
    return unanswerable


def _occurrences(context: str, text: str) -> list[int]:
    found, pos = [], context.find(text)
    while pos >= 0:
        found.append(pos)
        pos = context.find(text, pos + 1)
    return found
