"""XLSX: each sheet's rows as "header: value; header: value" lines, one Document per block of
rows (a sheet of 1,000 rows gives 5 Documents), with `sheet`, `row_start` and `row_end`.

openpyxl's read-only mode streams rows instead of building every cell object, and data_only
gives the values Excel last calculated rather than formulas (a file never opened in Excel
after its formulas were written has no cached values; those cells read as empty).
"""

from __future__ import annotations

import io

import openpyxl
from llama_index.core.schema import Document

from indexes.readers.common import make_document, row_blocks

ROWS_PER_DOCUMENT = 200


def read_xlsx(data: bytes, file_name: str) -> list[Document]:
    workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    documents = []
    try:
        for sheet in workbook.worksheets:
            # Some writers store a wrong (too small or too large) dimension; ignore it and read
            # the rows that are really there.
            if hasattr(sheet, "reset_dimensions"):
                sheet.reset_dimensions()
            for block in row_blocks(sheet.iter_rows(values_only=True), ROWS_PER_DOCUMENT):
                documents.append(
                    make_document(
                        block.text,
                        file_name,
                        sheet=sheet.title,
                        row_start=block.row_start,
                        row_end=block.row_end,
                    )
                )
    finally:
        workbook.close()  # read-only workbooks keep the archive open until closed
    return documents
