"""``{items, total}`` pages, the same shape for every list endpoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar

from litestar.params import QueryParameter
from pydantic import BaseModel

T = TypeVar("T")


@dataclass(frozen=True)
class PageParams:
    page: int
    page_size: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    page: int
    page_size: int


def provide_page_params(
    page: Annotated[int, QueryParameter(ge=1, description="1-based page number")] = 1,
    page_size: Annotated[
        int, QueryParameter(ge=1, le=100, description="Items per page (max 100)")
    ] = 20,
) -> PageParams:
    return PageParams(page=page, page_size=page_size)
