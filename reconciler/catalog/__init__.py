"""Load a plan catalog: YAML / kuploy.app JSON → schema check → presets, copy_from → `Catalog`.

No network, no database. Every problem with the input is collected and raised at once as a
`CatalogError`, one line each: `file:line: plans[2] (pro).priceCents: message` (the line is left out
where it is not known). Schema problems come first (sorted by file and line), then invariants.

Formats (the JSON Schema `schemas/catalog.schema.json` documents every key):

- `*.yaml` / `*.yml`: the Git-authored catalog, `{version: 1, plans: [...]}`; plans may use
  `preset: small|medium|large` or `copy_from: <slug>`, resolved here.
- `*.json`: the kuploy.app catalog as synced at license sync, `{"plans": [...]}`, same plan keys.

A folder loads every such file directly in it, sorted by name; plans merge into one catalog.

The stages, one module each, in the order a catalog goes through them:

- `sources`: which files a path names, and their text (size, binary and encoding refused);
- `yaml_source`, `json_source` (+ `json_lines`): text → data with the line of every key and value;
- `schema`: the JSON Schema check and its errors in the catalog's words;
- `resolution`: presets, copy_from and sizes → `model.PlanSpec`;
- `invariants`: rules across keys and plans, the webhook endpoint;
- `loader`: the entry points that run them; `export`: `Catalog` → YAML.

`problems` words every problem; `sizes` reads and writes `50GiB`.
"""

from reconciler.catalog.export import dump_catalog
from reconciler.catalog.invariants import STRIPE_CURRENCIES, webhook_endpoint_from_flag
from reconciler.catalog.loader import load_catalog, load_catalog_text
from reconciler.catalog.resolution import PRESETS
from reconciler.catalog.sizes import format_size, parse_size
from reconciler.catalog.sources import MAX_FILE_BYTES, MAX_PLANS

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_PLANS",
    "PRESETS",
    "STRIPE_CURRENCIES",
    "dump_catalog",
    "format_size",
    "load_catalog",
    "load_catalog_text",
    "parse_size",
    "webhook_endpoint_from_flag",
]
