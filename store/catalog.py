"""Catalog items and offers as stored records; the vector index is derived from these."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    Connection,
    CursorResult,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from store.errors import NotFound
from store.features import forget_features_of_items
from store.models import CatalogItem, CatalogOffer, CatalogVersion, EventRow, HiddenItem
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
    if count:
        bump_catalog_version(session)
    return count


_items = CatalogItem.__table__
# Built once: SQLAlchemy computes a statement's cache key on every execution unless the same
# statement object runs again, whose key it keeps.
_ITEMS = select(_items.c.data).where(_items.c.item_id.in_(bindparam("item_ids", expanding=True)))
_VERSION = select(CatalogVersion.__table__.c.version).where(CatalogVersion.__table__.c.id == 1)


def get_items(session: Session | Connection, item_ids: Sequence[str]) -> dict[str, Item]:
    """The stored items of `item_ids` (those not stored are absent), read as columns."""
    if not item_ids:
        return {}
    items = (Item.model_validate(data) for data in session.scalars(_ITEMS, {"item_ids": item_ids}))
    return {item.item_id: item for item in items}


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
    if count:
        bump_catalog_version(session)  # The vocabulary of stored text holds offers' words.
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
    bump_catalog_version(session)
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
    bump_catalog_version(session)
    session.flush()
    return True


def unhide_item(session: Session, item_id: str) -> bool:
    """Make a hidden item recommendable again; False if it was not hidden."""
    get_item(session, item_id)
    removed = cast(
        CursorResult[Any], session.execute(delete(HiddenItem).where(HiddenItem.item_id == item_id))
    ).rowcount
    if removed:
        bump_catalog_version(session)
    return bool(removed)


def delete_item(session: Session, item_id: str) -> None:
    """Delete a stored item (and its hidden mark); NotFound if it is not stored. Events that
    name it stay: they are the people's history."""
    get_item(session, item_id)
    session.execute(delete(HiddenItem).where(HiddenItem.item_id == item_id))
    session.execute(delete(CatalogItem).where(CatalogItem.item_id == item_id))
    bump_catalog_version(session)


def popularity_of(session: Session, item_ids: Sequence[str]) -> dict[str, float]:
    """Each stored item's popularity (see `refresh_popularity`)."""
    if not item_ids:
        return {}
    rows = session.execute(
        select(CatalogItem.item_id, CatalogItem.popularity).where(CatalogItem.item_id.in_(item_ids))
    )
    return {item_id: float(popularity) for item_id, popularity in rows}


# -- wt-d: the catalog's version, and the popularity ranking kept until it moves --------------


def catalog_version(session: Session | Connection) -> int:
    """The catalog's version: it moves with every committed change to the items, their
    popularity or their hidden marks (`bump_catalog_version`), and to the offers. A decision
    reads it with the person (`store.person.read_person`)."""
    return session.scalar(_VERSION) or 0


def bump_catalog_version(session: Session) -> None:
    """Move the catalog's version inside the caller's transaction, so that the change and the
    bump commit, or roll back, together."""
    bumped = cast(
        CursorResult[Any],
        session.execute(
            update(CatalogVersion)
            .where(CatalogVersion.id == 1)
            .values(version=CatalogVersion.version + 1)
        ),
    ).rowcount
    if not bumped:  # a schema made without the migration's row
        session.execute(insert(CatalogVersion).values(id=1, version=1))


@dataclass(frozen=True)
class _Ranking:
    rows: tuple[tuple[Item, float], ...]
    complete: bool  # no item beyond these passes the filter


class PopularCache:
    """`popular_items`, read from the store once per filter and catalog version.

    Invalidation: every call first reads the catalog's version (one single-row read; a decision
    passes the `version` it read with the person at its start, `tools.reads.open_decision`), and
    a version other than the one the rankings were read at drops them all. Every writer of items,
    popularity or hidden marks (`upsert_items`, `refresh_popularity`, `hide_item`,
    `unhide_item`, `delete_item`) bumps the version in its own transaction, in whichever process
    it runs, so a change is respected by the next call of every process once it is committed.
    The version is read before the ranking: a ranking that raced a change is at worst kept
    under the older version, and dropped at the next call.

    A filter's ranking is kept without the person's `exclude_ids`, `headroom` items longer than
    asked for, and the excluded ones are removed here: the answer is exactly `popular_items`'.
    The items returned are shared between calls and must not be changed.
    """

    def __init__(self, *, max_filters: int = 256, headroom: int = 20) -> None:
        self.max_filters = max_filters
        self.headroom = headroom
        self._lock = threading.Lock()
        self._version: int | None = None
        self._rankings: dict[tuple[Any, ...], _Ranking] = {}

    def popular_items(
        self,
        session: Session,
        *,
        limit: int,
        categories: Sequence[str] = (),
        exclude_ids: Sequence[str] = (),
        max_min_age: int | None = None,
        in_stock_only: bool = True,
        version: int | None = None,
    ) -> list[tuple[Item, float]]:
        """What `popular_items` answers, from the cache while the catalog's version holds:
        `version` when given (read earlier in the same request), else read now. No statement
        runs when the cache answers."""
        if version is None:
            version = catalog_version(session)
        key = (tuple(sorted(set(categories))), max_min_age, in_stock_only)
        excluded = set(exclude_ids)
        with self._lock:
            if version != self._version:
                self._version, self._rankings = version, {}
            ranking = self._rankings.get(key)
        if ranking is None or (len(ranking.rows) < limit + len(excluded) and not ranking.complete):
            fetch = limit + len(excluded) + self.headroom
            rows = popular_items(
                session,
                limit=fetch,
                categories=key[0],
                max_min_age=max_min_age,
                in_stock_only=in_stock_only,
            )
            ranking = _Ranking(tuple(rows), complete=len(rows) < fetch)
            with self._lock:
                if self._version == version:
                    if key not in self._rankings and len(self._rankings) >= self.max_filters:
                        del self._rankings[next(iter(self._rankings))]
                    self._rankings[key] = ranking
        return [row for row in ranking.rows if row[0].item_id not in excluded][:limit]
