"""The two ways in: `load_catalog` (a file or a folder) and `load_catalog_text` (a fetched kuploy.app
document). Each source is read and parsed, schema-checked, then all plans are resolved together and
the invariants checked; every problem is raised at once as one `CatalogError`.
"""

from __future__ import annotations

from pathlib import Path

from reconciler import errors, model
from reconciler.catalog.invariants import default_problems, plan_problems, webhook_endpoint
from reconciler.catalog.json_source import parse_json
from reconciler.catalog.problems import Doc, printable
from reconciler.catalog.resolution import Entry, Resolver, build
from reconciler.catalog.schema import check_schema
from reconciler.catalog.sources import (
    MAX_FILE_BYTES,
    MAX_PLANS,
    catalog_files,
    plan_count,
    read_text,
    too_many_plans,
)
from reconciler.catalog.yaml_source import parse_yaml


def _parse(path: Path, number: int) -> Doc:
    doc = Doc(file=printable(str(path)), number=number)
    text = read_text(path, doc.file)
    try:
        if path.suffix.lower() == ".json":
            parse_json(doc, text)
        else:
            parse_yaml(doc, text)
    except RecursionError as e:
        raise errors.CatalogError([f"{doc.file}: nested too deeply to be a catalog"]) from e
    return doc


def load_catalog(path: Path) -> model.Catalog:
    """Load, validate and resolve the catalog at `path` (a file or a folder of catalog files).

    Raises `errors.CatalogError` carrying every problem found, one line each.
    """
    try:
        files = catalog_files(path)
    except OSError as e:
        raise errors.CatalogError([f"{printable(str(path))}: cannot read: {e.strerror or e}"]) from e
    fatal: list[str] = []
    docs: list[Doc] = []
    label = printable(str(path))
    for number, file_path in enumerate(files):
        try:
            docs.append(_parse(file_path, number))
        except errors.CatalogError as e:
            fatal.extend(e.problems)
    if (total := sum(map(plan_count, docs))) > MAX_PLANS:
        raise too_many_plans(label, f"{total} plans in its {len(docs)} files") from None
    for doc in docs:
        _check_schema(doc)
    return _resolve_docs(docs, fatal, label)


def load_catalog_text(text: str, *, source: str) -> model.Catalog:
    """Validate and resolve a kuploy.app catalog JSON document already in memory (fetched from a URL);
    problems name `source` as they name a file. Raises `errors.CatalogError`."""
    doc = Doc(file=printable(source))
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise errors.CatalogError([f"{doc.file}: larger than 10 MiB; refusing to parse it as a catalog"])
    try:
        parse_json(doc, text.removeprefix("\ufeff"))
    except RecursionError as e:
        raise errors.CatalogError([f"{doc.file}: nested too deeply to be a catalog"]) from e
    _check_schema(doc)
    return _resolve_docs([doc], [], doc.file)


def _check_schema(doc: Doc) -> None:
    """The schema check, guarded as parsing is: the JSON line walk runs here when a problem wants
    a line, and a file can nest deeply enough for it."""
    try:
        check_schema(doc)
    except RecursionError as e:
        raise errors.CatalogError([f"{doc.file}: nested too deeply to be a catalog"]) from e


def _resolve_docs(docs: list[Doc], fatal: list[str], label: str) -> model.Catalog:
    found = sorted((item for doc in docs for item in doc.found), key=lambda item: item.key)
    problems = fatal + [item.text for item in found]

    entries = _entries(docs)
    complete = not problems
    resolver = Resolver(entries, problems)
    resolved: list[tuple[Entry, model.PlanSpec]] = []
    for entry in entries:
        try:
            fields = resolver.resolve(entry)
        except RecursionError as e:
            raise errors.CatalogError([*problems, f"{label}: copy_from chains are nested too deeply"]) from e
        if fields is None:
            complete = False
            continue
        plan = build(fields)
        if resolver.by_slug.get(plan.slug) is entry:
            resolved.append((entry, plan))
        problems.extend(plan_problems(entry, plan))
    if complete and not resolver.failed:
        problems.extend(default_problems(label, resolved))
    endpoint = webhook_endpoint(docs, problems)
    if problems:
        raise errors.CatalogError(problems)
    return model.Catalog(
        plans=tuple(plan for _, plan in resolved),
        sources=tuple(d.file for d in docs),
        webhook_endpoint=endpoint,
    )


def _entries(docs: list[Doc]) -> list[Entry]:
    """Every plan written as a mapping, in file order; a plan with a schema problem is not valid."""
    entries: list[Entry] = []
    for doc in docs:
        plans = doc.data.get("plans") if isinstance(doc.data, dict) else None
        if not isinstance(plans, list):
            continue
        bad = {item.path[1] for item in doc.found if len(item.path) > 1 and item.path[0] == "plans"}
        for index, data in enumerate(plans):
            if isinstance(data, dict):
                entries.append(Entry(doc=doc, index=index, data=data, valid=index not in bad))
    return entries
