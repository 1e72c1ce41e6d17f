"""Request and response bodies of the HTTP server (pydantic; they make /openapi.json).

No `from __future__ import annotations` here: FastAPI reads these annotations at run time.
"""

from pydantic import BaseModel, ConfigDict, Field

Inputs = str | list[str]


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: Inputs = Field(description="a text, or a list of texts")
    text_pairs: Inputs | None = Field(None, description="second texts, one per input (sentence-pair models)")


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: Inputs = Field(description="a text (prompt), or a list of them")
    max_new_tokens: int | None = Field(None, ge=1, description="capped by the server's --max-new-tokens")


class Label(BaseModel):
    label: str
    probability: float
    probabilities: dict[str, float]


class ClassifyResponse(BaseModel):
    results: list[Label]
    model: str


class Generated(BaseModel):
    generated_text: str


class GenerateResponse(BaseModel):
    results: list[Generated]
    max_new_tokens: int
    model: str
