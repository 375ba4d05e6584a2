"""The service's response bodies as typed models: /openapi.json describes what the server sends.

Routes build plain dicts (a lookup's answer is streamed, a chunk of queries at a time); these
models are the documented shape of those dicts, and the tests parse every answer with a client
generated from /openapi.json.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorResponse(BaseModel):
    """Every error: one line naming the field, upload, list or database at fault."""

    error: str


class FoundHash(BaseModel):
    path: str = Field(description="the label stored with the hash (U+FFFD where its bytes are not UTF-8)")
    path_b64: str | None = Field(None, description="the label's bytes in base64, present when not UTF-8")
    list: str
    hash: str = Field(description="24 hex digits")
    distance: int = Field(description="bits that differ from the query")


class QueryResult(BaseModel):
    query: str = Field(description="the hash as sent, or the uploaded file's name")
    hash: str | None = Field(None, description="the query's hash (absent when the image could not be hashed)")
    matches: list[FoundHash] = Field(default_factory=list, description="nearest first")
    complete: bool | None = Field(None, description="false when more stored hashes lie within max_distance than "
                                                    "listed (the limit, or the request's bounds, cut them)")
    searched: bool | None = Field(None, description="false when the request's bounds were reached before this "
                                                    "query was searched")
    error: str | None = Field(None, description="why this image could not be hashed (the others go on)")


class SearchedList(BaseModel):
    name: str
    count: int


class SkippedList(BaseModel):
    name: str
    model_id: str
    count: int
    reason: str


class LookupResponse(BaseModel):
    model_id: str = Field(description="the model whose hashes were searched")
    max_distance: int
    limit: int
    searched: list[SearchedList] = Field(description="the lists searched")
    skipped: list[SkippedList] = Field(description="lists left out (of another model), with the reason")
    results: list[QueryResult] = Field(description="one per query, in the order sent")
    complete: bool = Field(description="false when the request's bounds cut the answer (see note)")
    note: str | None = Field(None, description="why the answer is not complete, and what to do")


class HashResponse(BaseModel):
    hash: str
    model_id: str
    margins: list[float]
    unstable_bits: int
    unstable: list[int]
    margin_threshold: float


class ListInfo(BaseModel):
    name: str
    model_id: str
    count: int


class ModelInfo(BaseModel):
    model_id: str
    description: str
    count: int


class DeletedList(BaseModel):
    name: str
    deleted: int = Field(description="hashes removed")


class AddedHashes(BaseModel):
    name: str
    added: int


class SkippedLine(BaseModel):
    line: int
    reason: str


class ImportResponse(BaseModel):
    name: str
    source: str = Field(description="names the entries the file left unnamed (SOURCE:LINE)")
    imported: int
    replaced: int = Field(description="entries of the list replaced by an entry of the same name")
    skipped: list[SkippedLine] = Field(description="malformed lines, by number")


class Health(BaseModel):
    status: str


class ServerModel(BaseModel):
    model_id: str
    description: str
    synthetic: bool


class InfoResponse(BaseModel):
    version: str
    model: ServerModel | None
    models: list[ModelInfo]
    lists: list[ListInfo]
    max_upload: int
    max_distance: int
    max_limit: int
    max_queries: int
    max_results: int
