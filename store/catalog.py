"""Catalog items and offers as stored records; the vector index is derived from these."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

from sqlalchemy import CursorResult, case, delete, func, or_, select
from sqlalchemy.orm import Session

from store.errors import NotFound
from store.features import forget_features_of_items
from store.models import CatalogItem, CatalogOffer, EventRow, HiddenItem
from store.schemas import Item, Offer


def upsert_items(session: Session, items: Iterable[Item]) -> int:
    count = 0
    changed = []  # items whose category or price the features of people who had them read
    for item in items:
        row = session.get(CatalogItem, item.item_id)
        data = item.model_dump(mode="json")
        if row is None or (row.category, row.price) != (item.category, item.price):
            changed.append(item.item_id)
        if row is None:
            session.add(
                CatalogItem(
                    item_id=item.item_id,
                    category=item.category,
                    price=item.price,
                    stock=item.stock,
                    min_age=item.min_age,
                    data=data,
                )
            )
        else:
            row.category, row.price, row.stock, row.min_age, row.data = (
                item.category,
                item.price,
                item.stock,
                item.min_age,
                data,
            )
        count += 1
    forget_features_of_items(session, changed)
    return count


def get_items(session: Session, item_ids: Sequence[str]) -> dict[str, Item]:
    if not item_ids:
        return {}
    rows = session.scalars(select(CatalogItem).where(CatalogItem.item_id.in_(item_ids)))
    return {row.item_id: Item.model_validate(row.data) for row in rows}


def count_items(session: Session) -> int:
    """Items that may be recommended: every stored item but the hidden ones (which the vector
    index does not hold)."""
    return (
        session.scalar(
            select(func.count())
            .select_from(CatalogItem)
            .where(CatalogItem.item_id.not_in(select(HiddenItem.item_id)))
        )
        or 0
    )


def upsert_offers(session: Session, offers: Iterable[Offer]) -> int:
    count = 0
    for offer in offers:
        row = session.get(CatalogOffer, offer.offer_id)
        data = offer.model_dump(mode="json")
        if row is None:
            session.add(CatalogOffer(offer_id=offer.offer_id, data=data))
        else:
            row.data = data
        count += 1
    return count


def all_offers(session: Session) -> list[Offer]:
    rows = session.scalars(select(CatalogOffer).order_by(CatalogOffer.offer_id))
    return [Offer.model_validate(row.data) for row in rows]


def refresh_popularity(session: Session) -> int:
    """Recompute each item's popularity from events: purchases weigh 5, carts 3, clicks 2, views 1."""
    weight = case(
        (EventRow.type == "purchase", 5),
        (EventRow.type == "add_to_cart", 3),
        (EventRow.type == "click", 2),
        else_=1,
    )
    totals: dict[str, float] = {
        item_id: float(total)
        for item_id, total in session.execute(
            select(EventRow.item_id, func.sum(weight)).group_by(EventRow.item_id)
        ).all()
    }
    rows = session.scalars(select(CatalogItem)).all()
    for row in rows:
        row.popularity = float(totals.get(row.item_id, 0))
    return len(rows)


def popular_items(
    session: Session,
    *,
    limit: int,
    categories: Sequence[str] = (),
    exclude_ids: Sequence[str] = (),
    max_min_age: int | None = None,
    in_stock_only: bool = True,
) -> list[tuple[Item, float]]:
    """Items ranked by popularity, with the same filters as retrieval.

    This is the cold-start ranking and the fallback when the vector index does not answer.
    """
    query = select(CatalogItem)
    if categories:
        query = query.where(CatalogItem.category.in_(categories))
    if exclude_ids:
        query = query.where(CatalogItem.item_id.not_in(exclude_ids))
    if max_min_age is not None:
        query = query.where(CatalogItem.min_age <= max_min_age)
    if in_stock_only:
        query = query.where(or_(CatalogItem.stock.is_(None), CatalogItem.stock > 0))
    query = query.where(CatalogItem.item_id.not_in(select(HiddenItem.item_id)))
    query = query.order_by(CatalogItem.popularity.desc(), CatalogItem.item_id).limit(limit)
    return [(Item.model_validate(row.data), row.popularity) for row in session.scalars(query)]


def catalog_coverage(session: Session) -> dict[str, int]:
    """Counts of the stored catalog that decide's item rules act on: all items, those out of
    stock (stock 0; unknown stock counts as available), those with a minimum age, and the
    number of categories and the size of the largest."""
    total, out_of_stock, age_restricted = session.execute(
        select(
            func.count(),
            func.count().filter(CatalogItem.stock == 0),
            func.count().filter(CatalogItem.min_age > 0),
        ).select_from(CatalogItem)
    ).one()
    sizes = session.scalars(
        select(func.count()).select_from(CatalogItem).group_by(CatalogItem.category)
    ).all()
    return {
        "items": total,
        "out_of_stock": out_of_stock,
        "age_restricted": age_restricted,
        "categories": len(sizes),
        "largest_category": max(sizes, default=0),
    }


# -- wt-e: reading, hiding and deleting single items ------------------------------------------


def get_item(session: Session, item_id: str) -> tuple[Item, bool]:
    """(the item, whether it is hidden); NotFound if it is not stored."""
    row = session.get(CatalogItem, item_id)
    if row is None:
        raise NotFound(f"item {item_id!r} does not exist")
    return Item.model_validate(row.data), session.get(HiddenItem, item_id) is not None


def hidden_ids(session: Session, item_ids: Sequence[str] | None = None) -> set[str]:
    """The hidden items among `item_ids` (all of them when None)."""
    query = select(HiddenItem.item_id)
    if item_ids is not None:
        query = query.where(HiddenItem.item_id.in_(item_ids))
    return set(session.scalars(query))


def hide_item(session: Session, item_id: str) -> bool:
    """Mark a stored item hidden; False if it already was. NotFound if it is not stored."""
    get_item(session, item_id)
    if session.get(HiddenItem, item_id) is not None:
        return False
    session.add(HiddenItem(item_id=item_id))
    session.flush()
    return True


def unhide_item(session: Session, item_id: str) -> bool:
    """Make a hidden item recommendable again; False if it was not hidden."""
    get_item(session, item_id)
    return bool(
        cast(
            CursorResult[Any],
            session.execute(delete(HiddenItem).where(HiddenItem.item_id == item_id)),
        ).rowcount
    )


def delete_item(session: Session, item_id: str) -> None:
    """Delete a stored item (and its hidden mark); NotFound if it is not stored. Events that
    name it stay: they are the people's history."""
    get_item(session, item_id)
    session.execute(delete(HiddenItem).where(HiddenItem.item_id == item_id))
    session.execute(delete(CatalogItem).where(CatalogItem.item_id == item_id))


def popularity_of(session: Session, item_ids: Sequence[str]) -> dict[str, float]:
    """Each stored item's popularity (see `refresh_popularity`)."""
    if not item_ids:
        return {}
    rows = session.execute(
        select(CatalogItem.item_id, CatalogItem.popularity).where(CatalogItem.item_id.in_(item_ids))
    )
    return {item_id: float(popularity) for item_id, popularity in rows}
