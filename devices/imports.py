"""Device lists in and tokens out: the CSV (`key,name,labels`) and JSON shapes of a bulk import, shared by
`POST /api/v1/devices/bulk` and `manage.py importdevices`. Rows are numbered from 1, the header not counted."""

import csv
import io
from collections.abc import Sequence

from django.core.exceptions import ValidationError

from devices.labels import labels_parse
from devices.models import Device
from devices.services import DeviceSpec, DevicesRefused, RowProblem, devices_bulk_create, devices_bulk_problems

CSV_COLUMNS = ("key", "name", "labels")


def device_specs_from_csv(text: str) -> tuple[list[DeviceSpec], list[RowProblem]]:
    """The devices of a CSV whose header names `key` (required), `name` and `labels` (`site=north, model=tx`,
    quoted), with the rows that could not be read. Lines may end in LF, CRLF or CR alone."""
    if "\x00" in text:  # the csv module would read it, the database would refuse it
        row = text[: text.index("\x00")].count("\n")
        return [], [RowProblem(row, "", "row", "a NUL character: not text")]
    reader = csv.DictReader(io.StringIO(text, newline=""))  # "": every line ending is a line ending
    try:
        header = reader.fieldnames or []
    except csv.Error as exc:
        return [], [RowProblem(0, "", "header", f"not CSV: {exc}")]
    if "key" not in header or set(header) - set(CSV_COLUMNS):
        return [], [RowProblem(0, "", "header", "the first line names the columns: key (required), name, labels")]
    try:
        return _specs(reader)
    except csv.Error as exc:  # a field over csv.field_size_limit(), a quote left open, ...
        return [], [RowProblem(reader.line_num, "", "row", f"not CSV: {exc}")]


def _specs(reader: csv.DictReader) -> tuple[list[DeviceSpec], list[RowProblem]]:
    specs, problems = [], []
    for row, fields in enumerate(reader, start=1):
        key = (fields.get("key") or "").strip()
        if None in fields:
            problems.append(RowProblem(row, key, "row", "more values than the header has columns"))
        try:
            labels = labels_parse(fields.get("labels") or "")
        except ValidationError as exc:
            problems.append(RowProblem(row, key, "labels", "; ".join(exc.messages)))
            labels = {}
        specs.append(DeviceSpec(key, (fields.get("name") or "").strip(), labels))
    return specs, problems


def device_specs_from_json(items: object) -> tuple[list[DeviceSpec], list[RowProblem]]:
    """The devices of a JSON list of `{"key", "name"?, "labels"?: {name: value}}`, with the rows that are not."""
    if not isinstance(items, list):
        return [], [RowProblem(0, "", "devices", "a list of {key, name, labels} objects")]
    specs, problems = [], []
    for row, item in enumerate(items, start=1):
        item = item if isinstance(item, dict) else {}
        key, name, labels = item.get("key"), item.get("name", ""), item.get("labels", {})
        for field, value, kind in (("key", key, str), ("name", name, str), ("labels", labels, dict)):
            if not isinstance(value, kind):
                problems.append(RowProblem(row, str(key or ""), field, f"a {'string' if kind is str else 'object'}"))
        if set(item) - set(CSV_COLUMNS):
            problems.append(RowProblem(row, str(key or ""), sorted(set(item) - set(CSV_COLUMNS))[0], "unknown field"))
        labels = labels if isinstance(labels, dict) else {}
        specs.append(DeviceSpec(key if isinstance(key, str) else "", name if isinstance(name, str) else "", labels))
    return specs, problems


def devices_import(*, specs: Sequence[DeviceSpec], problems: Sequence[RowProblem] = ()) -> list[tuple[Device, str]]:
    """Create every device of a read import in one transaction, or none: DevicesRefused names every row that
    could not be read or would be refused."""
    if problems:
        raise DevicesRefused(sorted([*problems, *devices_bulk_problems(specs=specs)], key=lambda p: p.row))
    return devices_bulk_create(specs=specs)


def tokens_csv(created: Sequence[tuple[Device, str]]) -> str:
    """`key,token` per created device: the only copy of the tokens."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("key", "token"))
    writer.writerows((device.key, token) for device, token in created)
    return out.getvalue()
