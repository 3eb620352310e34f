"""``{items, total}`` pages, the same shape for every list endpoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar

from litestar.params import QueryParameter
from pydantic import BaseModel

T = TypeVar("T")
MAX_PAGE_SIZE = 100
# Keeps the row offset inside a 64-bit integer: a larger page would fail in the driver as a 500.
MAX_PAGE = 2**31 - 1


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
    page: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE, description="1-based page number")] = 1,
    page_size: Annotated[
        int,
        QueryParameter(ge=1, le=MAX_PAGE_SIZE, description=f"Items per page (max {MAX_PAGE_SIZE})"),
    ] = 20,
) -> PageParams:
    return PageParams(page=page, page_size=page_size)
