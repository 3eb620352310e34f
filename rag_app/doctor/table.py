"""The doctor's results as an aligned text table (component | status | detail | fix)."""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Sequence

from rag_app.doctor.common import CheckResult

HEADERS = ("COMPONENT", "STATUS", "DETAIL", "FIX")
GAP = "  "
MIN_TEXT_WIDTH = 24  # narrowest the detail and fix columns get, however narrow the terminal


def format_table(results: Sequence[CheckResult], width: int = 120) -> str:
    """``width``: the terminal's; detail and fix wrap inside their columns to fit it."""
    component_width = max(len(HEADERS[0]), *(len(r.component) for r in results))
    status_width = max(len(HEADERS[1]), *(len(r.status) for r in results))
    text_width = width - component_width - status_width - 3 * len(GAP)
    detail_width = max(MIN_TEXT_WIDTH, text_width * 11 // 20)  # detail a little wider
    fix_width = max(MIN_TEXT_WIDTH, text_width - detail_width)
    widths = (component_width, status_width, detail_width, fix_width)
    lines = [_line(HEADERS, widths), _line(tuple("-" * w for w in widths), widths)]
    for result in results:
        cells = (
            [result.component],
            [result.status.upper()],
            _wrap(result.detail, detail_width),
            _wrap(result.fix, fix_width),
        )
        for row in range(max(len(cell) for cell in cells)):
            lines.append(
                _line(tuple(cell[row] if row < len(cell) else "" for cell in cells), widths)
            )
    lines.append("")
    lines.append(summary(results))
    return "\n".join(lines)


def summary(results: Sequence[CheckResult]) -> str:
    counts = Counter(result.status for result in results)
    if not counts["problem"] and not counts["warning"]:
        return f"No problems found ({counts['ok']} ok, {counts['skipped']} skipped)."
    parts = [
        f"{counts[status]} {status}{'s' if counts[status] != 1 else ''}"
        for status in ("problem", "warning")
        if counts[status]
    ]
    return f"{', '.join(parts)} ({counts['ok']} ok, {counts['skipped']} skipped)."


def _wrap(text: str, width: int) -> list[str]:
    # Long words (paths, URLs) are split rather than pushing the columns out of line.
    return textwrap.wrap(text, width, break_on_hyphens=False) or [""]


def _line(cells: tuple[str, ...], widths: tuple[int, ...]) -> str:
    return GAP.join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
