"""`Catalog` → YAML text that `load_catalog` reads back into the same plans (`export`): every value
explicit, sizes in binary units where whole, strings quoted wherever a YAML reader could take them for
something else.
"""

from __future__ import annotations

from typing import Any

import yaml

from reconciler import model
from reconciler.catalog.sizes import format_size
from reconciler.catalog.yaml_source import plain_scalar_tag


class _Dumper(yaml.SafeDumper):
    """SafeDumper that quotes every string `yaml_source` would not read back as that string."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit[0]:
            return plain_scalar_tag(value)
        return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call,unused-ignore]


def dump_catalog(catalog: model.Catalog, *, comment: str = "") -> str:
    """A YAML catalog that `load_catalog` reads back into the same plans (used by `export`).

    Every value is explicit (no preset, no copy_from): an export is the state as it is.
    """
    plans = []
    for plan in catalog.plans:
        entry: dict[str, Any] = {"slug": plan.slug, "name": plan.name}
        if plan.description:
            entry["description"] = plan.description
        for key, value in (
            ("priceCents", plan.price_cents),
            ("currency", plan.currency),
            ("billingCycle", plan.billing_cycle.value if plan.billing_cycle else None),
        ):
            if value is not None:
                entry[key] = value
        entry["isDefault"] = plan.is_default
        entry["isActive"] = plan.is_active
        entry["limits"] = {
            column: "unlimited"
            if value == model.UNLIMITED
            else (format_size(value) if column == "maxStorageBytes" else value)
            for column, value in plan.limits.as_columns().items()
        }
        entry["features"] = plan.features.as_json()
        plans.append(entry)
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    return header + yaml.dump(
        {"version": 1, "plans": plans}, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100
    )
