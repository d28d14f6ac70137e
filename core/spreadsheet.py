"""CSV text cells a spreadsheet will not run: a cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return is
read as a formula by Excel, LibreOffice and Google Sheets (CSV injection), so it gets a leading `'`, as OWASP
recommends. Numbers are written as numbers and never pass through here: a negative value stays a number."""

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell_safe(text: str) -> str:
    """`text` as a CSV cell no spreadsheet evaluates (a key such as `-1-1` becomes `'-1-1`)."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text
