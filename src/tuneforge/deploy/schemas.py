"""Request and response bodies of the HTTP server (pydantic; they make /openapi.json).

The document is the server's contract, checked by schemathesis (tests/test_serve_contract.py): each served
run gets request and response models of its own, built here by the helpers its task calls from
`Task.serve_schema` (only the fields that task and that run accept: `text_pairs` exists only for a
text-pair classifier, `max_new_tokens` only for generative tasks), with every limit JSON Schema can express
(`maxItems` = --max-inputs, `maxLength` = the longest string that fits in --max-body-bytes, the labels as an
enum). Limits it cannot express (tokens per input) answer 422 in FastAPI's error shape, like every other 422.

No `from __future__ import annotations` here: FastAPI and pydantic read these annotations at run time.
"""

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

BODY_OVERHEAD = len(json.dumps({"inputs": ""}))  # the smallest body around one string


@dataclass(frozen=True)
class ServeContext:
    """What a task needs to declare its route for one served model: the server's limits and the model's labels."""

    max_inputs: int  # inputs per request (--max-inputs)
    max_body_bytes: int  # request body (--max-body-bytes)
    max_new_tokens: int  # cap on a request's max_new_tokens (--max-new-tokens)
    context_length: int  # the longest input the model accepts (prompt + new tokens for decoder-only models)
    labels: tuple[str, ...] = ()  # classification: the label names, in id order

    @property
    def max_chars(self) -> int:
        """The longest string that fits in a request body at all (what `maxLength` can say about a text)."""
        return max(1, self.max_body_bytes - BODY_OVERHEAD)


@dataclass(frozen=True)
class ServeRoute:
    """A task's POST route: what serve.py mounts and documents. How the server feeds the model follows the
    task's spec (`generates`: max_new_tokens and generated_text; `prompt_shares_context`: prompts are cut to
    the context left for the new tokens) and `pairs`."""

    path: str  # e.g. "/v1/classify"
    summary: str
    request: type[BaseModel]
    response: type[BaseModel]
    pairs: bool = False  # the request carries a second text per input (sentence-pair classifier, QA context)
    input_field: str = "inputs"  # the request field holding the texts (a QA route: "question")
    pair_field: str = "text_pairs"  # the request field holding the second texts (a QA route: "context")
    windows: bool = False  # the task windows long inputs (no token limit; --truncate does not apply)


class ErrorMessage(BaseModel):
    """The body of 401 (API key) and 413 (request body too large)."""

    detail: str = Field(description="what went wrong and what to do")


class Health(BaseModel):
    status: Literal["ok"]


class Limits(BaseModel):
    max_batch_size: int
    max_wait_ms: float
    max_body_bytes: int
    max_inputs: int
    max_input_tokens: int
    truncate: bool
    max_new_tokens: int


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="allow")  # fields LoadedModel.describe() may add later pass through
    task: str
    labels: list[str]
    base_model: str | None
    version: str
    source: str
    format: str
    quantize: str | None
    max_length: int | None
    tuneforge_version: str
    route: str
    limits: Limits


class Stats(BaseModel):
    batches: int = Field(description="model calls")
    inputs: int
    requests: int
    mean_batch_size: float
    batch_sizes: dict[str, int] = Field(description="inputs per model call -> number of calls")
    max_batch_size: int
    max_wait_ms: float


def texts_type(ctx: ServeContext, what: str, min_chars: int = 0) -> Any:
    """One text or a non-empty list of at most --max-inputs texts, each no longer than fits in the body."""
    text = Annotated[str, Field(min_length=min_chars, max_length=ctx.max_chars)]
    many = Annotated[list[text], Field(min_length=1, max_length=ctx.max_inputs)]  # type: ignore[valid-type]
    return Annotated[text | many, Field(description=f"{what}, or a list of 1 to {ctx.max_inputs} of them")]


def classify_schema(ctx: ServeContext, pairs: bool, name: str = "Classify", outputs: str = "label"
                    ) -> tuple[type[BaseModel], type[BaseModel]]:
    """(request, response) of a classifier: `text_pairs` is required for a pair model and absent otherwise.
    `outputs` says what each result holds: "label" (one label, its probability, every label's probability),
    "labels" (multi-label: the predicted label set and every label's sigmoid score) or "score" (regression: the
    predicted value)."""
    fields: dict[str, Any] = {"inputs": (texts_type(ctx, "a text"), ...)}
    if pairs:
        fields["text_pairs"] = (texts_type(ctx, "the second text of each input (as many as inputs)"), ...)
    request = create_model(f"{name}Request", __config__=ConfigDict(extra="forbid"), **fields)
    label_type: Any = Literal[tuple(ctx.labels)] if ctx.labels else str
    probability = Annotated[float, Field(ge=0.0, le=1.0)]
    if outputs == "labels":
        label = create_model(f"{name}Labels", labels=(list[label_type], Field(description=(
            "the predicted labels: those whose score reaches the label's decision threshold (tuned on validation; "
            "may be empty)"))),
            scores=(dict[label_type, probability], Field(description="every label's sigmoid score")))
    elif outputs == "score":
        label = create_model(f"{name}Score", score=(float, Field(description="the predicted value, in the training "
                                                                             "target's units")))
    else:
        label = create_model(f"{name}Label", label=(label_type, ...), probability=(probability, ...),
                             probabilities=(dict[label_type, probability],
                                            Field(description="every label's probability")))
    response = create_model(f"{name}Response", results=(list[label], Field(max_length=ctx.max_inputs)),
                            model=(str, Field(description="the served run's id")))
    return request, response


def generate_schema(ctx: ServeContext, prompt_shares_context: bool, name: str = "Generate"
                    ) -> tuple[type[BaseModel], type[BaseModel]]:
    """(request, response) of a generative task. A larger max_new_tokens than --max-new-tokens is capped, not
    refused. When prompt and new tokens share the context (decoder-only), a prompt must not be empty (the model
    continues something) and values of max_new_tokens that leave no room for a prompt are refused."""
    new_tokens: dict[str, Any] = {"ge": 1}
    if prompt_shares_context and ctx.max_new_tokens >= ctx.context_length:
        new_tokens["le"] = ctx.context_length - 1  # at least one prompt token must fit
    request = create_model(
        f"{name}Request", __config__=ConfigDict(extra="forbid"),
        inputs=(texts_type(ctx, "a text (prompt)", min_chars=1 if prompt_shares_context else 0), ...),
        max_new_tokens=(int | None, Field(None, **new_tokens, description=(
            f"default: the run's; capped at {ctx.max_new_tokens} (--max-new-tokens)"))))
    generated = create_model(f"{name}d", generated_text=(str, ...))
    response = create_model(f"{name}Response", results=(list[generated], Field(max_length=ctx.max_inputs)),
                            max_new_tokens=(int, Field(description="the value used")),
                            model=(str, Field(description="the served run's id")))
    return request, response


def entities_schema(ctx: ServeContext, types: list[str], name: str = "Entities"
                    ) -> tuple[type[BaseModel], type[BaseModel]]:
    """(request, response) of a token classifier: per input its entities, each {entity_group, word, start, end,
    score} as transformers' token-classification pipeline answers (`word` is `input[start:end]`). Inputs of any
    length are accepted (the task windows them); `types` are the entity types (the enum of entity_group)."""
    request = create_model(f"{name}Request", __config__=ConfigDict(extra="forbid"),
                           inputs=(texts_type(ctx, "a text"), ...))
    kind: Any = Literal[tuple(types)] if types else str
    offset = Annotated[int, Field(ge=0, le=ctx.max_chars)]
    entity = create_model(
        f"{name[:-1] if name.endswith('s') else name}", entity_group=(kind, Field(description="the entity type")),
        word=(str, Field(description="the entity's text: input[start:end]")),
        start=(offset, Field(description="character offset of its first character in the input")),
        end=(offset, Field(description="character offset just after its last character")),
        score=(Annotated[float, Field(ge=0.0, le=1.0)], Field(description="mean probability of its words' tags")))
    found = create_model(f"{name}Found", entities=(list[entity], Field(description="in order of position")))
    response = create_model(f"{name}Response", results=(list[found], Field(max_length=ctx.max_inputs)),
                            model=(str, Field(description="the served run's id")))
    return request, response


def answer_schema(ctx: ServeContext, name: str = "Answer") -> tuple[type[BaseModel], type[BaseModel]]:
    """(request, response) of extractive question answering: `question` and `context` (as many contexts as
    questions), each result {answer, start, end, score} with `answer == context[start:end]`; no answer (a SQuAD v2
    model abstaining) is answer "" with start = end = 0. Contexts of any length are accepted (the task windows
    them)."""
    request = create_model(
        f"{name}Request", __config__=ConfigDict(extra="forbid"),
        question=(texts_type(ctx, "a question"), ...),
        context=(texts_type(ctx, "the context of each question, the text the answer is taken from (as many as "
                                 "questions)"), ...))
    offset = Annotated[int, Field(ge=0)]
    answer = create_model(
        f"{name}Span", answer=(str, Field(description='the answer, context[start:end]; "" when the model abstains')),
        start=(offset, Field(description="first character of the answer in the context (0 when abstaining)")),
        end=(offset, Field(description="end character, exclusive (0 when abstaining)")),
        score=(Annotated[float, Field(ge=0.0, le=1.0)], Field(description=(
            "probability of this answer among the n-best spans and no answer (of no answer when abstaining)"))))
    response = create_model(f"{name}Response", results=(list[answer], Field(max_length=ctx.max_inputs)),
                            model=(str, Field(description="the served run's id")))
    return request, response
