"""Chat data for causal LMs: render conversations with the tokenizer's chat template, loss on assistant
turns only.

>>> ids, labels = render_conversation(tokenizer, [{"role": "user", "content": "hi"},
...                                               {"role": "assistant", "content": "hello"}])  # doctest: +SKIP

`apply_chat_template(..., return_assistant_tokens_mask=True)` silently returns all zeros for templates
without a `{% generation %}` tag (most of them), so the assistant spans are found by rendering the
conversation turn by turn: the tokens an assistant turn adds after the prompt that precedes it.
"""

from __future__ import annotations

import json
from typing import Any

from tuneforge.data.table import Table
from tuneforge.errors import DataError

ROLES = ("system", "user", "assistant", "tool")


def parse_conversations(table: Table, column: str) -> None:
    """Check every row holds a list of {role, content} messages; store each as canonical JSON text (so rows
    can be deduplicated and hashed like any other column)."""
    canonical = []
    for i, value in enumerate(table.columns[column]):
        messages = json.loads(value) if isinstance(value, str) and value.lstrip().startswith("[") else value
        if not isinstance(messages, list) or not messages:
            raise DataError(f"{table.where(i)}: column {column!r} must hold a non-empty list of messages like "
                            '[{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]')
        for m in messages:
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise DataError(f"{table.where(i)}: column {column!r}: each message needs a role "
                                f"({', '.join(ROLES)}) and text content, got {str(m)[:80]!r}")
        if not any(m["role"] == "assistant" for m in messages):
            raise DataError(f"{table.where(i)}: column {column!r}: the conversation has no assistant turn, so "
                            "nothing would be learned from it")
        canonical.append(json.dumps(messages, ensure_ascii=False, sort_keys=True))
    table.columns[column] = canonical


def _ids(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool = False) -> list[int]:
    if not messages:
        return []
    out = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation_prompt,
                                        return_dict=False)
    return list(out["input_ids"] if isinstance(out, dict) else out)


def render_conversation(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """Token ids of the whole conversation and labels that are -100 everywhere but assistant turns."""
    full = _ids(tokenizer, messages)
    labels = [-100] * len(full)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_ids(tokenizer, messages[:i], generation_prompt=True))
        end = len(_ids(tokenizer, messages[:i + 1]))
        labels[start:end] = full[start:end]
    return full, labels


def check_template(tokenizer: Any, source: str) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(f"{source}: chat data needs a tokenizer with a chat template, and this model's has none; "
                        "use prompt/completion columns instead, or a chat model")
