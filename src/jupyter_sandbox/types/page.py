"""Cursor pages with an auto-paging iterator, as the openai SDK's `SyncCursorPage`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from jupyter_sandbox._exceptions import BadRequestError

T = TypeVar("T", bound=BaseModel)

MAX_PAGE_LIMIT = 100


def invalid_after(after: object, what: str) -> BadRequestError:
    """The 400 for a cursor that names no item (another project's ids are unknown too)."""
    return BadRequestError(
        f"Invalid after: {after!r:.80} is not the id of a {what} you can list "
        "(pass the last id of the previous page)",
        param="after",
    )


class ListParams(BaseModel):
    """`limit` 1..100 (default 20), `order` asc/desc by creation (default desc), `after`."""

    model_config = ConfigDict(extra="forbid")
    limit: int = Field(default=20, ge=1, le=MAX_PAGE_LIMIT)
    order: Literal["asc", "desc"] = "desc"
    after: str | None = None


class CursorPage(BaseModel, Generic[T]):
    """One page of a list. Iterating it walks every page; `.data` is this page only."""

    object: Literal["list"] = "list"
    data: list[T]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False
    _next_page: Callable[[str], CursorPage[T]] | None = PrivateAttr(default=None)

    def has_next_page(self) -> bool:
        """Whether another page follows this one."""
        return self.has_more and bool(self.data)

    def get_next_page(self) -> CursorPage[T]:
        """Fetch the page after this one."""
        if not self.has_next_page() or self._next_page is None or self.last_id is None:
            raise StopIteration("no next page")
        return self._next_page(self.last_id)

    def iter_pages(self) -> Iterator[CursorPage[T]]:
        """This page, then each following one."""
        page: CursorPage[T] = self
        while True:
            yield page
            if not page.has_next_page() or page._next_page is None:
                return
            page = page.get_next_page()

    def auto_paging_iter(self) -> Iterator[T]:
        """Every item across all pages."""
        for page in self.iter_pages():
            yield from page.data

    def __iter__(self) -> Iterator[T]:  # type: ignore[override]
        return self.auto_paging_iter()

    def with_next(self, fetch: Callable[[str], CursorPage[T]]) -> CursorPage[T]:
        """Attach how to fetch the next page (used by the resources, not by users)."""
        self._next_page = fetch
        return self
