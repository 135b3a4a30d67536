"""Errors shoprec raises on purpose: each says what is wrong and where (file, column, row,
config key); the CLI prints them as one paragraph, never a traceback."""

from __future__ import annotations

from pathlib import Path

_TEXT = {".csv", ".tsv", ".txt"}


class ShoprecError(Exception):
    """Base class for every error shoprec raises on purpose (the CLI prints these plainly)."""


class DatasetNotFoundError(ShoprecError):
    """A built-in dataset is not where it was looked for."""

    def __init__(self, name: str, looked_in: Path, source: str) -> None:
        self.name = name
        self.looked_in = looked_in
        self.source = source
        super().__init__(
            f"Dataset '{name}' was not found: looked for it in {looked_in}. "
            f"Set SHOPREC_DATA to the folder that holds '{looked_in.name}', "
            f"or download the original from {source}."
        )


class DataError(ShoprecError):
    """Input data that cannot be read as asked.

    Attributes:
        file: the file that holds the bad data (None for in-memory frames).
        column: the column at fault, when one is.
        row: 0-based index of the first bad data row (header not counted), when known.
        value: the offending value, when there is one.
        header_lines: lines before the first data row in a text file (for the line number).
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        column: str | None = None,
        row: int | None = None,
        value: object = None,
        hint: str | None = None,
        header_lines: int = 1,
    ) -> None:
        self.file = None if file is None else str(file)
        self.column = column
        self.row = row
        self.value = value
        self.hint = hint
        parts = []
        if self.file is not None:
            parts.append(f"In {self.file}")
        if column is not None:
            parts.append(f"column '{column}'")
        if row is not None:
            text_file = self.file is not None and Path(self.file).suffix.lower() in _TEXT
            line = f", line {row + header_lines + 1} of the file" if text_file else ""
            header = ", header not counted" if header_lines else ""
            parts.append(f"first bad row {row} (0-based{header}{line})")
        where = ", ".join(parts)
        text = f"{where}: {message}" if where else message
        if value is not None:
            text += f" (value: {value!r})"
        if hint:
            text += f" {hint}"
        super().__init__(text)
