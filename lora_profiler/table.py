"""Small tables that show themselves: text in a terminal, HTML in a notebook, a DataFrame on request.

Results of the analyses and of ``lora_profiler.Run`` are data (frozen dataclasses, dicts); to be
read they become a ``Table``: named columns (the unit in the name, ``total_us``), raw values in
the rows, a format per column for people. ``repr(table)`` is a fixed-width text table,
``table._repr_html_()`` an HTML ``<table>`` (Jupyter shows it), ``table.to_pandas()`` a
``pandas.DataFrame`` of the raw values (pandas is optional: ``pip install 'lora_profiler[pandas]'``).

A result class that shows itself as a table mixes in ``Tabular`` and defines ``table()``; being a
dataclass, it is declared with ``repr=False`` so the mixin's short ``__repr__`` is kept.

Nothing here imports numpy, torch or matplotlib.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence, Union

from . import units

__all__ = ["Column", "Table", "Tabular", "fmt_us", "fmt_pct", "fmt_count", "fmt_x", "require_pandas"]

Formatter = Callable[[Any], str]


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt_default(v: Any) -> str:
    """Integers with thousands separators, floats to 4 significant figures, None as ''."""
    if _is_missing(v):
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e15 else f"{v:.3e}"
    return str(v)


def fmt_us(v: Any) -> str:
    """Microseconds as us / ms / s with 3 significant figures."""
    return "" if _is_missing(v) else units.fmt_us(v)


def fmt_pct(v: Any) -> str:
    """A fraction 0..1 as a percentage."""
    return "" if _is_missing(v) else f"{100 * v:.1f}%"


def fmt_count(v: Any) -> str:
    return "" if _is_missing(v) else f"{int(v):,}"


def fmt_x(v: Any) -> str:
    """A ratio as ``1.23x``."""
    return "" if _is_missing(v) else f"{v:.2f}x"


@dataclass(frozen=True)
class Column:
    """One column: ``name`` (the DataFrame column, unit in the name), ``label`` (the header people
    read; default: the name), ``fmt`` (value -> text; default ``fmt_default``)."""

    name: str
    label: Optional[str] = None
    fmt: Optional[Formatter] = None

    @property
    def header(self) -> str:
        return self.label or self.name

    def text(self, value: Any) -> str:
        return (self.fmt or fmt_default)(value)


ColumnSpec = Union[Column, str, tuple]


def _column(spec: ColumnSpec) -> Column:
    if isinstance(spec, Column):
        return spec
    if isinstance(spec, str):
        return Column(spec)
    return Column(*spec)


class Table:
    """Rows of raw values under named columns, with a title and notes.

    Args:
        columns: ``Column``s, names, or ``(name, label, fmt)`` tuples.
        rows: sequences of values, one per column.
        title: one line above the table.
        notes: lines below it (what the numbers are, what was cut).
        max_rows: rows shown in text and HTML (all rows stay in ``rows`` and ``to_pandas``).
    """

    def __init__(self, columns: Sequence[ColumnSpec], rows: Sequence[Sequence[Any]], title: str = "",
                 notes: Sequence[str] = (), max_rows: Optional[int] = 40):
        self.columns = [_column(c) for c in columns]
        self.rows = [tuple(r) for r in rows]
        for r in self.rows:
            if len(r) != len(self.columns):
                raise ValueError(f"table {title!r}: a row has {len(r)} values for {len(self.columns)} columns")
        self.title = title
        self.notes = list(notes)
        self.max_rows = max_rows

    # --- access ---------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.to_dicts())

    def __getitem__(self, i: int) -> dict:
        return dict(zip(self.names, self.rows[i]))

    def column(self, name: str) -> list:
        """The raw values of one column."""
        k = self.names.index(name)
        return [r[k] for r in self.rows]

    def to_dicts(self) -> list[dict]:
        """The rows as dicts of raw values."""
        return [dict(zip(self.names, r)) for r in self.rows]

    def to_pandas(self):
        """A ``pandas.DataFrame`` of the raw values (every row), the title in ``df.attrs``.

        Raises:
            ImportError: pandas is not installed (``pip install 'lora_profiler[pandas]'``).
        """
        pd = require_pandas()
        df = pd.DataFrame(self.rows, columns=self.names)
        df.attrs["title"] = self.title
        return df

    # --- display --------------------------------------------------------------------------------
    def _shown(self) -> tuple[list[tuple], int]:
        if self.max_rows is None or len(self.rows) <= self.max_rows:
            return self.rows, 0
        return self.rows[:self.max_rows], len(self.rows) - self.max_rows

    def text(self, first_width: int = 60) -> str:
        """A fixed-width text table: text columns left-aligned, numbers right-aligned."""
        shown, cut = self._shown()
        cells = [[c.text(v) for c, v in zip(self.columns, r)] for r in shown]
        cells = [[_clip(s, first_width) if i == 0 else s for i, s in enumerate(r)] for r in cells]
        heads = [c.header for c in self.columns]
        widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(heads)]
        left = [self._is_text(i) for i in range(len(self.columns))]

        def line(values):
            return "  ".join(v.ljust(w) if lf else v.rjust(w) for v, w, lf in zip(values, widths, left)).rstrip()

        out = [self.title] if self.title else []
        out.append(line(heads))
        out += [line(r) for r in cells]
        if cut:
            out.append(f"... {cut} more rows (to_pandas() or to_dicts() has them all)")
        out += self.notes
        return "\n".join(out)

    def _is_text(self, i: int) -> bool:
        values = [r[i] for r in self.rows if not _is_missing(r[i])]
        return not values or any(isinstance(v, str) for v in values)

    def __repr__(self) -> str:
        return self.text()

    __str__ = __repr__

    def to_html(self) -> str:
        """An HTML ``<table>`` (escaped; a caption for the title, notes in a ``<p>`` after it)."""
        import html  # here: most tables are printed as text, and html pulls in html.entities

        shown, cut = self._shown()
        e = html.escape
        parts = ['<table class="lp-table">']
        if self.title:
            parts.append(f"<caption>{e(self.title)}</caption>")
        parts.append("<thead><tr>" + "".join(f"<th>{e(c.header)}</th>" for c in self.columns) + "</tr></thead>")
        parts.append("<tbody>")
        num = [not self._is_text(i) for i in range(len(self.columns))]
        for r in shown:
            parts.append("<tr>" + "".join(
                f'<td class="num">{e(c.text(v))}</td>' if n else f"<td>{e(c.text(v))}</td>"
                for c, v, n in zip(self.columns, r, num)) + "</tr>")
        parts.append("</tbody></table>")
        notes = ([f"{cut} more rows not shown (to_pandas() has them all)"] if cut else []) + self.notes
        if notes:
            parts.append('<p class="lp-notes">' + "<br>".join(e(n) for n in notes) + "</p>")
        return "".join(parts)

    def _repr_html_(self) -> str:
        return self.to_html()


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def require_pandas():
    """The pandas module, or ImportError saying how to get it."""
    try:
        import pandas
    except ImportError as exc:
        raise ImportError("to_pandas() needs pandas, an optional dependency: "
                          "pip install 'lora_profiler[pandas]' (or pip install pandas)") from exc
    return pandas


class Tabular:
    """Mixin for a result that shows itself as its ``table()``: a short ``repr``, an HTML table in
    notebooks and ``to_pandas()``. Dataclasses using it are declared with ``repr=False``."""

    def table(self) -> Table:  # pragma: no cover - every user defines it
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.table().text()

    def _repr_html_(self) -> str:
        return self.table().to_html()

    def to_pandas(self):
        """The table's raw values as a ``pandas.DataFrame`` (see ``Table.to_pandas``)."""
        return self.table().to_pandas()
