"""POST /v1/catalog/items: upsert items, embedded and indexed in the same request."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from starlette.concurrency import run_in_threadpool

from api.auth import AdminCaller
from api.deps import ServicesDep
from api.errors import RETRY_AFTER_S
from api.schemas import CatalogIn, CatalogOut
from retrieval.catalog import ingest_items
from retrieval.index import IndexUnavailable

router = APIRouter(prefix="/v1", tags=["catalog"])


@router.post("/catalog/items", response_model=CatalogOut)
async def upsert_catalog_items(
    body: CatalogIn, services: ServicesDep, caller: AdminCaller
) -> CatalogOut:
    """Create or replace items; each is stored, embedded and indexed, or none is."""
    ids = [item.item_id for item in body.items]
    if len(set(ids)) != len(ids):
        raise HTTPException(422, "items: item_id values must be unique within a request")
    # An item that gives no currency is in the service's currency, as in file ingest.
    currency = {"currency": services.settings.currency}
    items = [
        item if "currency" in item.model_fields_set else item.model_copy(update=currency)
        for item in body.items
    ]
    try:
        count = await run_in_threadpool(
            ingest_items,
            services.db,
            services.embedder,
            services.index,
            items,
            batch=len(body.items),
        )
    except IndexUnavailable as error:
        raise HTTPException(
            503,
            f"vector index unavailable, nothing was written: {error}",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        ) from error
    return CatalogOut(upserted=count, item_ids=ids, indexed_total=services.index.count())
