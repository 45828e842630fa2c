"""The pull-request comment renderer on hand-built plans: structure, order, escaping, size."""

from __future__ import annotations

import re
from dataclasses import replace
from functools import cache

import pytest

from reconciler.diff import diff
from reconciler.model import Catalog, CurrentState, PlanRow, StripeState
from reconciler.plan import Plan
from reconciler.render.markdown import GITHUB_COMMENT_LIMIT, render_markdown

from test_diff import FREE, PRO, converged
from test_render import RAW, hostile_plan

HOSTILE = "a|b </details> ``` <script>alert(1)</script>\n# heading *x* [l](u) \\"
LEFT_OUT = re.compile(
    r"\n… and (\d+) more changes not shown(?: \((\d+) of them billing changes\))?: "
    r"run `kuploy-reconciler plan -o json` for the full plan\.\n$"
)


def small_plan(subscriptions: dict[str, int] | None = None) -> Plan:
    """One of each: free updated, pro re-priced, team created, gone archived (catalog order)."""
    gone = replace(PRO, slug="gone", name="Gone")
    desired = Catalog(
        plans=(
            replace(FREE, description="Free forever"),
            replace(PRO, price_cents=2500),
            replace(PRO, slug="team", name="Team", price_cents=9900),
        )
    )
    plan = diff(desired, converged(FREE, PRO, gone))
    return replace(plan, subscriptions=subscriptions or {})


@cache
def big_plan(n: int) -> Plan:
    """`n` changes, a quarter each: re-priced, archived, created, renamed — interleaved in the catalog."""
    specs = [replace(PRO, slug=f"plan-{i:05}", name=f"Plan {i}") for i in range(n)]
    kinds = [i % 4 for i in range(n)]
    current = converged(*(spec for spec, kind in zip(specs, kinds, strict=True) if kind != 2))
    desired = Catalog(
        plans=tuple(
            replace(spec, price_cents=2500) if kind == 0 else replace(spec, name=spec.name + "+")
            for spec, kind in zip(specs, kinds, strict=True)
            if kind != 1
        )
    )
    plan = diff(desired, current)
    assert len(plan.changes) == n
    archived = {f"price_{spec.slug}": 3 for spec, kind in zip(specs, kinds, strict=True) if kind < 2}
    return replace(plan, subscriptions=archived)


@cache
def billing_plan(replaced: int, archived: int, other: int, slug: str = "plan-{:05}") -> Plan:
    """`replaced` re-priced plans, then `archived` removed ones, then `other` renamed ones."""
    specs = [replace(PRO, slug=slug.format(i), name=f"Plan {i}") for i in range(replaced + archived + other)]
    desired = Catalog(
        plans=tuple(
            replace(spec, price_cents=2500) if i < replaced else replace(spec, name=spec.name + "+")
            for i, spec in enumerate(specs)
            if not replaced <= i < replaced + archived
        )
    )
    plan = diff(desired, converged(*specs))
    assert len(plan.changes) == len(specs)
    return plan


def head_of(markdown: str) -> str:
    return markdown.split("<details>", 1)[0]


def assert_well_formed(markdown: str) -> None:
    """Every `<details>` closed before the next opens, summaries closed, fences paired."""
    tags = re.findall(r"</?details>", markdown)
    assert tags == ["<details>", "</details>"] * (len(tags) // 2)
    assert markdown.count("<summary>") == markdown.count("</summary>") == len(tags) // 2
    assert markdown.count("```") % 2 == 0
    for line in markdown.splitlines():
        if line.startswith("| "):
            assert line.endswith(" |") and line.count("|") in (3, 4), line
        if line.startswith("#"):
            assert line.startswith("### kuploy-reconciler · ") or line in (
                "#### Billing changes",
                "#### Other changes",
            ), line


def test_first_line_counts_every_action() -> None:
    first = render_markdown(small_plan()).splitlines()[0]
    assert (
        first == "### kuploy-reconciler · Plan: 1 to create, 1 to replace price, 1 to update, 1 to archive."
    )


def test_pending_migrations_are_named_in_the_heading_and_listed() -> None:
    markdown = render_markdown(replace(small_plan(), pending_migrations=("0004_a", "0005_b")))
    assert markdown.splitlines()[0].endswith("1 to archive. 2 pending migrations.")
    assert "**Pending migrations** (apply runs them first): 0004&#95;a, 0005&#95;b\n" in markdown


def test_billing_changes_come_first_replacements_then_archives() -> None:
    markdown = render_markdown(small_plan())
    order = [
        markdown.index(marker)
        for marker in (
            "#### Billing changes",
            "<b>plan.pro</b> (Pro): replace price",
            "<b>plan.gone</b> (Gone): archive",
            "#### Other changes",
            "<b>plan.team</b> (Team): create",
            "<b>plan.free</b> (Free): update",
        )
    ]
    assert order == sorted(order)
    assert_well_formed(markdown)


def test_details_hold_before_after_and_the_operations() -> None:
    markdown = render_markdown(small_plan())
    pro = markdown[markdown.index("<b>plan.pro</b>") : markdown.index("<b>plan.gone</b>")]
    assert "| field | before | after |\n| --- | --- | --- |\n| priceCents | 2000 | 2500 |\n" in pro
    assert (
        "1. create Stripe Price 2500 cad/month\n"
        "1. set default Price of prod&#95;pro: price&#95;pro → (new price)\n"
        "1. update cloud&#95;plans row 'pro'\n"
        "1. archive Stripe Price price&#95;pro\n\n</details>\n"
    ) in pro
    team = markdown[markdown.index("<b>plan.team</b>") : markdown.index("<b>plan.free</b>")]
    assert "| field | value |" in team and '| name | "Team" |' in team
    assert "| limits.maxStorageBytes | 10737418240 |" in team
    assert "1. create Stripe Product 'Team'" in team


def test_subscriptions_staying_on_archived_prices_are_counted() -> None:
    markdown = render_markdown(small_plan({"price_pro": 12, "price_gone": 1}))
    assert (
        "</details>\n\n⚠ 12 active subscriptions stay on the old price; only new checkouts use the new one.\n"
    ) in markdown
    assert "⚠ 1 active subscription stays on the archived price, still billed" in markdown


def test_unknown_and_zero_subscriptions_say_so() -> None:
    assert "Active subscriptions on the archived price: not known." in render_markdown(small_plan())
    markdown = render_markdown(small_plan({"price_pro": 0, "price_gone": 0}))
    assert markdown.count("No active subscriptions on the archived price.") == 2
    assert "⚠" not in markdown


def test_hostile_names_stay_inside_their_cell_and_block() -> None:
    current = CurrentState(
        rows={"free": PlanRow(spec=FREE, stripe_product_id=None, stripe_price_id=None)},
        stripe=StripeState(),
    )
    desired = Catalog(
        plans=(
            replace(FREE, description=HOSTILE),
            replace(PRO, slug="x|y<z>`", name=HOSTILE, description="|"),
        )
    )
    markdown = render_markdown(diff(desired, current))
    assert_well_formed(markdown)
    assert markdown.count("<details>") == 2
    assert "<script>" not in markdown and "```" not in markdown and "\n# heading" not in markdown
    assert (
        "<b>plan.x&#124;y&#60;z&#62;&#96;</b> (a&#124;b &#60;/details&#62; &#96;&#96;&#96; &#60;script"
        in (markdown)
    )
    assert '| description | "&#124;" |' in markdown
    assert "1. create Stripe Product 'a&#124;b &#60;/details&#62;" in markdown


def test_controls_bidi_overrides_and_mentions_are_neutralised() -> None:
    """A plan name must not ping a GitHub user or team, nor reorder or hide text in the comment."""
    markdown = render_markdown(hostile_plan())
    assert_well_formed(markdown)
    assert not any(char in markdown for char in RAW), repr(markdown)
    assert "\\u202e" not in markdown  # shown escaped, and the backslash as an entity
    assert "&#92;u202e" in markdown and "&#92;u009b31m" in markdown
    assert re.search(r"@[A-Za-z0-9]", markdown) is None, markdown
    assert "@&#8205;octocat" in markdown and "@&#8205;github/security" in markdown


def test_long_values_are_shortened() -> None:
    plan = diff(Catalog(plans=(replace(FREE, description="x" * 5000),)), converged(FREE))
    markdown = render_markdown(plan)
    assert f'| description | "" | "{"x" * 498}… |' in markdown
    assert len(markdown) < 1000


@pytest.mark.parametrize("n", [1000, 5000])
def test_big_plans_are_cut_between_whole_plans_billing_kept(n: int) -> None:
    markdown = render_markdown(big_plan(n))
    assert len(markdown) < GITHUB_COMMENT_LIMIT
    assert_well_formed(markdown)
    shown = markdown.count("<details>")
    note = LEFT_OUT.search(markdown)
    assert note is not None and shown > 20
    assert int(note[1]) == n - shown
    assert int(note[2]) == n // 2 - shown  # only billing changes made it
    assert "#### Other changes" not in markdown
    assert markdown.count(": replace price</summary>") == min(shown, n // 4)
    assert markdown.count("⚠ 3 active subscriptions stay") == shown


def test_the_head_names_every_re_priced_and_archived_plan() -> None:
    """1,000 plans, 333 re-priced and 333 removed: all 666 are named before the first folded block."""
    plan = billing_plan(333, 333, 334)
    markdown = render_markdown(plan)
    assert len(markdown) < GITHUB_COMMENT_LIMIT
    assert_well_formed(markdown)
    re_priced = ", ".join(f"`plan-{i:05}`" for i in range(333))
    archived = ", ".join(f"`plan-{i:05}`" for i in range(333, 666))
    head = head_of(markdown)
    assert f"\n**Re-priced (333):** {re_priced}\n" in head
    assert f"\n**Archived (333):** {archived}\n" in head
    assert "plan-00666" not in head  # a renamed plan is not a billing change
    assert LEFT_OUT.search(markdown) is not None  # the folded details are what gets cut


def test_a_few_thousand_slugs_are_all_named() -> None:
    markdown = render_markdown(billing_plan(1500, 1500, 0))
    assert len(markdown) < GITHUB_COMMENT_LIMIT
    head = head_of(markdown)
    assert head.count("`plan-") == 3000 and "more" not in head


def test_past_that_the_lists_are_cut_with_a_count() -> None:
    long_slug = "p" * 58 + "{:05}"  # the longest slug the catalog allows: 63 characters
    markdown = render_markdown(billing_plan(1500, 1000, 0, slug=long_slug))
    assert len(markdown) < GITHUB_COMMENT_LIMIT
    assert_well_formed(markdown)
    head = head_of(markdown)
    for label, total in (("Re-priced", 1500), ("Archived", 1000)):
        line = re.search(rf"\n\*\*{label} \({total}\):\*\* (.*)\n", head)
        assert line is not None, label
        named = re.findall(r"`(p+\d{5})`", line[1])
        more = re.fullmatch(r".*, … and (\d+) more", line[1])
        assert more is not None and len(named) + int(more[1]) == total, label
        assert len(named) > 300, label  # each list gets at least its share of the room
    assert len(head) < GITHUB_COMMENT_LIMIT * 3 // 4


def test_a_hand_made_slug_in_the_head_is_escaped() -> None:
    hostile = replace(PRO, slug="x|y<z>`_", name="Odd")
    markdown = render_markdown(diff(Catalog(plans=(FREE,)), converged(FREE, hostile)))
    assert "\n**Archived (1):** x&#124;y&#60;z&#62;&#96;&#95;\n" in head_of(markdown)
    assert_well_formed(markdown)


@pytest.mark.parametrize("limit", range(1500, 40_000, 2_711))
def test_any_limit_is_respected(limit: int) -> None:
    markdown = render_markdown(big_plan(1000), limit=limit)
    assert len(markdown) < limit
    assert_well_formed(markdown)
    note = LEFT_OUT.search(markdown)
    assert note is not None and int(note[1]) + markdown.count("<details>") == 1000


def test_a_plan_too_big_for_the_limit_is_left_out_whole() -> None:
    markdown = render_markdown(small_plan(), limit=600)
    assert len(markdown) < 600
    assert "<details>" not in markdown
    assert LEFT_OUT.search(markdown) is not None
    assert markdown.endswith(
        "… and 4 more changes not shown (2 of them billing changes): "
        "run `kuploy-reconciler plan -o json` for the full plan.\n"
    )


def test_a_plan_that_fits_has_no_note() -> None:
    markdown = render_markdown(small_plan())
    assert "more changes not shown" not in markdown
    assert markdown.count("<details>") == 4


def test_no_changes() -> None:
    assert render_markdown(Plan()) == (
        "### kuploy-reconciler · No changes\n\ncloud_plans and Stripe match the catalog.\n"
    )
    markdown = render_markdown(Plan(pending_migrations=("0001_cloud_plans",)))
    assert markdown.startswith("### kuploy-reconciler · No plan changes. 1 pending migration.\n")
    assert "<details>" not in markdown


def test_many_pending_migrations_do_not_blow_the_limit() -> None:
    migrations = tuple(f"{i:04}_migration" for i in range(10_000))
    markdown = render_markdown(Plan(pending_migrations=migrations))
    assert len(markdown) < GITHUB_COMMENT_LIMIT
    assert re.search(r"… and \d+ more\n$", markdown)
