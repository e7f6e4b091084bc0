"""One catalog item: read it, find similar items, hide it from recommendations, delete it."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from agents.services import Services
from api.auth import AdminCaller, CatalogCaller
from api.deps import ServicesDep
from api.errors import RETRY_AFTER_S
from api.gate import in_turn
from api.schemas import CatalogItemOut, ItemRemovedOut, SimilarItemOut, SimilarOut
from retrieval.index import IndexUnavailable, ItemFilter
from store.catalog import (
    delete_item,
    get_item,
    get_items,
    hidden_ids,
    hide_item,
    popular_items,
    unhide_item,
)
from store.features import purchased_items
from store.models import utcnow
from store.schemas import Channel, Item
from store.users import Subject
from tools.context import RunContext
from tools.profile import lookup_profile

router = APIRouter(prefix="/v1", tags=["catalog"])
ItemId = Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$")


@router.get("/catalog/items/{item_id}", response_model=CatalogItemOut)
def read_item(
    services: ServicesDep, caller: CatalogCaller, item_id: str = ItemId
) -> CatalogItemOut:
    """A stored item as it was last upserted, and whether it is hidden."""
    with services.db.session() as session:
        item, hidden = get_item(session, item_id)
    return CatalogItemOut(item=item, hidden=hidden)


@router.get("/catalog/items/{item_id}/similar", response_model=SimilarOut)
async def read_similar_items(
    request: Request,
    services: ServicesDep,
    caller: CatalogCaller,
    item_id: str = ItemId,
    k: int = Query(10, ge=1, le=50),
    user_id: str | None = Query(
        None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$",
        description="Leave out what this person bought (a bound key: its own user only).",
    ),
) -> SimilarOut:
    """Items nearest to this one by content, in stock, never itself nor a hidden item."""
    if user_id is not None:
        caller.act_for(user_id, what="similar items for another user")
    # A vector search and a few reads: on the loop, in turn with decisions (`api.gate`).
    return await in_turn(request, _similar, services, item_id, k, user_id)


@router.post("/catalog/items/{item_id}/hide", response_model=ItemRemovedOut)
async def hide_catalog_item(
    services: ServicesDep, caller: AdminCaller, item_id: str = ItemId
) -> ItemRemovedOut:
    """Hide an item: kept in the store, out of the vector index, never recommended."""

    def hide() -> None:
        with services.db.session() as session:
            hide_item(session, item_id)
            session.flush()
            _unindex(services, item_id)

    await run_in_threadpool(hide)
    return ItemRemovedOut(
        item_id=item_id, hidden=True, deleted=False, indexed_total=services.index.count()
    )


@router.post("/catalog/items/{item_id}/unhide", response_model=ItemRemovedOut)
async def unhide_catalog_item(
    services: ServicesDep, caller: AdminCaller, item_id: str = ItemId
) -> ItemRemovedOut:
    """Make a hidden item recommendable again: indexed as it is stored."""

    def unhide() -> None:
        with services.db.session() as session:
            item, _ = get_item(session, item_id)
            unhide_item(session, item_id)
            session.flush()
            try:
                services.index.upsert([item], services.embedder.embed([item.text()]))
            except IndexUnavailable as error:
                raise _unavailable(error) from error

    await run_in_threadpool(unhide)
    return ItemRemovedOut(
        item_id=item_id, hidden=False, deleted=False, indexed_total=services.index.count()
    )


@router.delete("/catalog/items/{item_id}", response_model=ItemRemovedOut)
async def delete_catalog_item(
    services: ServicesDep, caller: AdminCaller, item_id: str = ItemId
) -> ItemRemovedOut:
    """Delete an item from the store and the vector index (events that name it are kept)."""

    def remove() -> None:
        with services.db.session() as session:
            delete_item(session, item_id)
            session.flush()
            _unindex(services, item_id)

    await run_in_threadpool(remove)
    return ItemRemovedOut(
        item_id=item_id, hidden=False, deleted=True, indexed_total=services.index.count()
    )


def _unindex(services: Services, item_id: str) -> None:
    """Remove from the index inside the caller's transaction: if the index fails, the store's
    change rolls back with a 503, and the two never disagree."""
    try:
        services.index.delete([item_id])
    except IndexUnavailable as error:
        raise _unavailable(error) from error


def _unavailable(error: Exception) -> HTTPException:
    return HTTPException(
        503,
        f"vector index unavailable, nothing was changed: {error}",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def _similar(services: Services, item_id: str, k: int, user_id: str | None) -> SimilarOut:
    with services.db.session() as session:
        item, _ = get_item(session, item_id)
    exclude = [item_id]
    if user_id is not None:
        ctx = RunContext(services.tools, Subject(user_id, None), Channel.web, utcnow())
        if lookup_profile(ctx).known:
            with services.db.session() as session:
                exclude += purchased_items(session, ctx.subject, as_of=ctx.now)
    flt = ItemFilter(exclude_ids=tuple(dict.fromkeys(exclude)), in_stock_only=True)
    try:
        vector = services.index.vectors([item_id]).get(item_id)
        if vector is None:  # a hidden item is not indexed: its text stands in
            vector = services.embedder.embed([item.text()])[0]
        hits = services.index.search(vector, k=k, flt=flt)
    except IndexUnavailable as error:
        with services.db.session() as session:
            popular = popular_items(
                session, limit=k, categories=[item.category], exclude_ids=flt.exclude_ids
            )
        return SimilarOut(
            item_id=item_id,
            items=[_out(i, 0.0) for i, _ in popular],
            degraded=[f"vectors: {error}; popular items of the same category instead"],
        )
    with services.db.session() as session:
        found = get_items(session, [h.item_id for h in hits])
        hidden = hidden_ids(session, list(found))  # hidden since the search: still left out
    return SimilarOut(
        item_id=item_id,
        items=[
            _out(found[h.item_id], h.score)
            for h in hits
            if h.item_id in found and h.item_id not in hidden
        ],
        degraded=[],
    )


def _out(item: Item, score: float) -> SimilarItemOut:
    return SimilarItemOut(
        item_id=item.item_id,
        title=item.title,
        category=item.category,
        price=item.price,
        currency=item.currency,
        score=round(float(score), 6),
    )
