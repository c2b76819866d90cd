"""Reading statements back without the statements module: the CSV's rows, the HTML page's
structure (parsed, every element closed), and the ledger sums they must both equal."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from html.parser import HTMLParser

from forge.domain.calendar import Month, as_utc
from forge.domain.money import Bucket, format_micros
from forge.domain.records import LedgerEntry, LedgerKind

GROUP_FIELDS = {"key": "key_id", "project": "project_id", "model": "model", "route": "route"}


# The ledger's own account of a month --------------------------------------------------------
@dataclass
class LedgerMonth:
    """One bucket's month summed straight from ledger entries (amounts only, no balances)."""

    opening: int
    closing: int
    entries: list[LedgerEntry]
    totals: dict[str, int]
    counts: dict[str, int]
    charges_by: dict[str, dict[str, tuple[int, int]]]  # grouping -> name -> (count, amount)
    daily: dict[str, tuple[int, int]]  # YYYY-MM-DD -> (count, amount)


def ledger_month(entries: list[LedgerEntry], month: Month) -> LedgerMonth:
    def at(e: LedgerEntry) -> datetime:
        return as_utc(e.created_at)

    opening = sum(e.amount for e in entries if at(e) < month.start)
    inside = sorted((e for e in entries if month.start <= at(e) < month.end), key=lambda e: e.seq)
    # Every kind is listed, but transfers (between a split bucket's shards) only where any are.
    kinds = [k for k in LedgerKind if k is not LedgerKind.TRANSFER or k in {e.kind for e in inside}]
    totals = {k.value: sum(e.amount for e in inside if e.kind is k) for k in kinds}
    counts = {k.value: sum(1 for e in inside if e.kind is k) for k in kinds}
    charges = [e for e in inside if e.kind is LedgerKind.CHARGE]
    charges_by: dict[str, dict[str, tuple[int, int]]] = {}
    for grouping, attribute in GROUP_FIELDS.items():
        sums: dict[str, tuple[int, int]] = defaultdict(lambda: (0, 0))
        for e in charges:
            count, amount = sums[getattr(e, attribute) or ""]
            sums[getattr(e, attribute) or ""] = (count + 1, amount + e.amount)
        charges_by[grouping] = dict(sums)
    daily: dict[str, tuple[int, int]] = defaultdict(lambda: (0, 0))
    for e in charges:
        count, amount = daily[at(e).date().isoformat()]
        daily[at(e).date().isoformat()] = (count + 1, amount + e.amount)
    return LedgerMonth(
        opening=opening,
        closing=opening + sum(e.amount for e in inside),
        entries=inside,
        totals=totals,
        counts=counts,
        charges_by=charges_by,
        daily=dict(daily),
    )


# CSV ----------------------------------------------------------------------------------------
def csv_rows(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode("utf-8"))))


@dataclass
class CsvBucket:
    rows: list[dict[str, str]]

    def of(self, row_type: str) -> list[dict[str, str]]:
        return [r for r in self.rows if r["row_type"] == row_type]

    def one(self, row_type: str) -> dict[str, str]:
        [row] = self.of(row_type)
        return row


def csv_bucket(body: bytes, bucket: Bucket) -> CsvBucket:
    return CsvBucket([r for r in csv_rows(body) if r["bucket"] == bucket.value])


def assert_csv_tells(body: bytes, bucket: Bucket, expected: LedgerMonth, final: bool) -> None:
    """The CSV of one bucket says exactly what the ledger says."""
    part = csv_bucket(body, bucket)
    assert part.one("opening")["balance_after"] == format_micros(expected.opening)
    closing = part.one("closing" if final else "closing_provisional")
    assert closing["balance_after"] == format_micros(expected.closing)
    entries = part.of("entry")
    assert [r["entry_id"] for r in entries] == [e.entry_id for e in expected.entries]
    assert [r["amount"] for r in entries] == [format_micros(e.amount) for e in expected.entries]
    assert [r["balance_after"] for r in entries] == [
        format_micros(e.balance_after) for e in expected.entries
    ]
    assert {r["kind"]: r["amount"] for r in part.of("total")} == {
        k: format_micros(v) for k, v in expected.totals.items()
    }
    assert {r["kind"]: int(r["count"]) for r in part.of("total")} == expected.counts
    for grouping, attribute in GROUP_FIELDS.items():
        assert {
            r[attribute]: (int(r["count"]), r["amount"]) for r in part.of(f"charges_by_{grouping}")
        } == {n: (c, format_micros(a)) for n, (c, a) in expected.charges_by[grouping].items()}
    assert {r["date"]: (int(r["count"]), r["amount"]) for r in part.of("charges_by_day")} == {
        d: (c, format_micros(a)) for d, (c, a) in expected.daily.items()
    }


# HTML ---------------------------------------------------------------------------------------
_VOID = frozenset({"meta", "link", "br", "hr", "img", "input", "wbr"})


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    parents: tuple[Element, ...]
    text: str = ""

    def within(self, tag: str, **attrs: str) -> bool:
        return any(p.tag == tag and _matches(p, attrs) for p in self.parents)


def _matches(element: Element, attrs: dict[str, str]) -> bool:
    return all(element.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())


class Page(HTMLParser):
    """A parsed HTML page; parsing fails on any element closed out of order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self.stack: list[Element] = []

    @classmethod
    def parse(cls, body: bytes) -> Page:
        page = cls()
        text = body.decode("utf-8")
        assert text.startswith("<!DOCTYPE html>")
        page.feed(text)
        page.close()
        assert not page.stack, f"unclosed: {[e.tag for e in page.stack]}"
        return page

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs}, tuple(self.stack))
        self.elements.append(element)
        if tag not in _VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(Element(tag, {k: v or "" for k, v in attrs}, tuple(self.stack)))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1].tag == tag, (
            f"</{tag}> closes <{self.stack[-1].tag if self.stack else None}>"
        )
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        for open_element in self.stack:
            open_element.text += data

    def find(self, tag: str, **attrs: str) -> list[Element]:
        return [e for e in self.elements if e.tag == tag and _matches(e, attrs)]

    def section(self, bucket: Bucket) -> list[Element]:
        """Every element inside one bucket's section."""
        return [e for e in self.elements if e.within("section", data_bucket=bucket.value)]


def assert_html_tells(body: bytes, bucket: Bucket, expected: LedgerMonth, final: bool) -> Page:
    """The HTML page of one bucket says exactly what the ledger says; returns the page."""
    page = Page.parse(body)
    [html_body] = page.find("body")
    assert html_body.attrs["data-status"] == ("final" if final else "provisional")
    inside = page.section(bucket)
    summary = {e.attrs["data-row"]: e for e in inside if e.tag == "tr" and "data-row" in e.attrs}
    assert summary["opening"].attrs["data-amount"] == format_micros(expected.opening)
    closing = summary["closing" if final else "closing_provisional"]
    assert closing.attrs["data-amount"] == format_micros(expected.closing)
    for kind, amount in expected.totals.items():
        assert summary[kind].attrs["data-amount"] == format_micros(amount)
        assert int(summary[kind].attrs["data-count"]) == expected.counts[kind]
    rows = [e for e in inside if e.tag == "tr" and "data-entry-id" in e.attrs]
    assert [r.attrs["data-entry-id"] for r in rows] == [e.entry_id for e in expected.entries]
    assert [r.attrs["data-amount"] for r in rows] == [
        format_micros(e.amount) for e in expected.entries
    ]
    for grouping in GROUP_FIELDS:
        cells = [
            e
            for e in inside
            if e.tag == "tr" and "data-name" in e.attrs and e.within("table", data_group=grouping)
        ]
        assert {
            c.attrs["data-name"]: (int(c.attrs["data-count"]), c.attrs["data-amount"])
            for c in cells
        } == {n: (c, format_micros(a)) for n, (c, a) in expected.charges_by[grouping].items()}
    # The daily spend chart: one bar per day with charges, tallest for the biggest spend
    [chart] = [e for e in inside if e.tag == "svg"]
    bars = [e for e in inside if e.tag == "rect" and "bar" in e.attrs.get("class", "").split()]
    assert all(bar.within("svg") for bar in bars)
    assert {
        b.attrs["data-day"]: (int(b.attrs["data-count"]), b.attrs["data-amount"]) for b in bars
    } == {d: (c, format_micros(a)) for d, (c, a) in expected.daily.items()}
    assert chart.attrs["class"] == "daily-spend"
    by_spend = sorted(bars, key=lambda b: expected.daily[b.attrs["data-day"]][1], reverse=True)
    heights = [int(b.attrs["height"]) for b in by_spend]
    assert heights == sorted(heights) and all(h >= 1 for h in heights)
    return page
