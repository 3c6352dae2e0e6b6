"""Fixed-width text tables for terminals and Markdown reports (one layout for every table)."""

from __future__ import annotations

from collections.abc import Sequence


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = True
               ) -> str:
    """Columns padded to their widest cell.

    Args:
        header: column titles.
        rows: cells already formatted as strings, one list per row.
        markdown: a GitHub-flavoured Markdown table (``| a | b |`` with a rule line), else
            plain columns two spaces apart.
    """
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(str(h)), *(len(row[i]) for row in cells)]) for i, h in enumerate(header)]

    def line(values: Sequence[str]) -> str:
        padded = [str(v).ljust(w) for v, w in zip(values, widths, strict=True)]
        return "| " + " | ".join(padded) + " |" if markdown else "  ".join(padded)

    lines = [line(header)]
    if markdown:
        lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines + [line(row) for row in cells])
