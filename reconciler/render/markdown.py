"""The plan as a GitHub pull-request comment: summary first, every re-priced and archived plan named in
the head, each plan's details folded. Cut to fit only between whole plan blocks, ending with a note of
what was left out; text from the catalog always goes through `_escape`."""

from __future__ import annotations

import re
from typing import Any

from reconciler.model import flatten, printable
from reconciler.plan import Action, Plan, PlanChange, WebhookEndpointChange
from reconciler.render.text import MARKERS, _show, subscriptions_note, summary_line

GITHUB_COMMENT_LIMIT = 65_536
"""GitHub rejects a comment body longer than this many characters (characters, not bytes)."""

BILLING_ORDER = (Action.REPLACE_PRICE, Action.ARCHIVE)
"""Changes that move what customers pay, shown first (and so kept first when the comment is cut)."""
OTHER_ORDER = (Action.CREATE, Action.REACTIVATE, Action.UPDATE)
_ORDER = BILLING_ORDER + OTHER_ORDER

MAX_VALUE_CHARS = 500
"""A longer value is shortened in the comment; `plan -o json` has it whole."""

_FULL_PLAN_HINT = "run `kuploy-reconciler plan -o json` for the full plan"

NAMED_IN_HEAD = {Action.REPLACE_PRICE: "Re-priced", Action.ARCHIVE: "Archived"}
"""The changes whose plans the head names, all of them, in this order."""

_PLAIN_SLUG = re.compile(r"[A-Za-z0-9._-]+")

# Entities, not backslashes: `<summary>` sits in a raw HTML block where backslash escapes are not
# processed, and CommonMark treats an entity as literal text, never as markup.
_ESCAPES = str.maketrans(
    {char: f"&#{ord(char)};" for char in "&<>|`\\*_~[]#!\n\r"},
)
_MENTION = re.compile(r"@(?=[A-Za-z0-9])")
"""An `@` GitHub could read as a mention (of a user, or an org's team): it gets a zero-width joiner."""


def render_markdown(plan: Plan, *, limit: int = GITHUB_COMMENT_LIMIT) -> str:
    """Render `plan` as Markdown shorter than `limit` characters, counted as `len()` counts them.

    GitHub counts characters, as `len()` does; a 1/16 margin stays unused for what may count
    differently on the way (line endings sent as CRLF, astral characters counted as two).
    """
    budget = limit - limit // 16
    ordered = sorted(plan.changes, key=lambda change: _ORDER.index(change.action))
    reserve = len(_left_out(ordered, 0))  # the longest note: every change left out
    webhook = _webhook_block(plan.webhook_endpoint)
    room = budget - len(_head(plan, budget // 4, named="")) - len(webhook) - reserve
    head = _head(plan, budget // 4, named=_named_plans(ordered, room * 3 // 4)) + webhook
    pieces = [_section_heading(ordered, index) + _block(plan, change) for index, change in enumerate(ordered)]

    if len(head) + sum(map(len, pieces)) <= budget:
        return head + "".join(pieces)

    used = len(head) + reserve
    shown = 0
    for piece in pieces:
        if used + len(piece) > budget:
            break
        used += len(piece)
        shown += 1
    return head + "".join(pieces[:shown]) + _left_out(ordered, shown)


def _head(plan: Plan, room: int, *, named: str) -> str:
    title = "### kuploy-reconciler · "
    if plan.has_resource_changes:
        title += summary_line(plan)
    elif plan.pending_migrations:
        title += "No plan changes."
    else:
        return title + "No changes\n\ncloud_plans and Stripe match the catalog.\n"
    if not plan.pending_migrations:
        return title + "\n" + named

    count = len(plan.pending_migrations)
    title += f" {count} pending migration{'s' if count != 1 else ''}."
    names: list[str] = []
    for name in plan.pending_migrations:
        if sum(len(n) + 2 for n in names) + len(name) > room:
            names.append(f"… and {count - len(names)} more")
            break
        names.append(_escape(name))
    return f"{title}\n{named}\n**Pending migrations** (apply runs them first): {', '.join(names)}\n"


def _named_plans(ordered: list[PlanChange], room: int) -> str:
    """One paragraph per kind in NAMED_IN_HEAD (`**Archived (3):** `a`, `b`, `c``), within `room`.

    Each list gets at least an equal share of the room, and more when the lists after it need less.
    """
    paragraphs = [
        (label, slugs)
        for action, label in NAMED_IN_HEAD.items()
        if (slugs := [change.slug for change in ordered if change.action is action])
    ]
    out = ""
    for index, (label, slugs) in enumerate(paragraphs):
        rest = room - len(out)
        later = sum(len(_slug_paragraph(other, its, rest)) for other, its in paragraphs[index + 1 :])
        out += _slug_paragraph(label, slugs, max(rest // (len(paragraphs) - index), rest - later))
    return out


def _slug_paragraph(label: str, slugs: list[str], room: int) -> str:
    """`\n**label (n):** `a`, `b`\n`, cut to fit `room` with `… and k more` (counted) at the end."""
    start, end = f"\n**{label} ({len(slugs)}):** ", "\n"
    shown = [_slug(slug) for slug in slugs]
    if len(start) + len(", ".join(shown)) + len(end) <= room:
        return start + ", ".join(shown) + end
    note = f"… and {len(slugs)} more"  # the longest it can be
    used = len(start) + len(note) + len(end)
    if used > room:  # only with a limit far below GitHub's
        return ""
    fitting = 0
    for text in shown:
        if used + len(text) + 2 > room:
            break
        used += len(text) + 2
        fitting += 1
    return (
        start + "".join(f"{text}, " for text in shown[:fitting]) + f"… and {len(slugs) - fitting} more" + end
    )


def _slug(slug: str) -> str:
    """A code span for a slug of the catalog's characters; anything else (a hand-made row) escaped."""
    return f"`{slug}`" if _PLAIN_SLUG.fullmatch(slug) else _escape(slug)


def _webhook_block(change: WebhookEndpointChange | None) -> str:
    """The webhook endpoint's change, always shown (it is small: a URL and six events)."""
    if change is None:
        return ""
    marker, _ = MARKERS[change.action]
    lines = [
        "",
        "#### Webhook endpoint",
        "",
        f"<details><summary>{marker} <b>{_escape(change.address)}</b>: {change.action.value}</summary>",
        "",
    ]
    if change.before is None:
        lines += ["| field | value |", "| --- | --- |"]
        lines += [f"| {key} | {_cell(value)} |" for key, value in change.after.items()]
    else:
        lines += ["| field | before | after |", "| --- | --- | --- |"]
        lines += [f"| {_escape(f.path)} | {_cell(f.before)} | {_cell(f.after)} |" for f in change.fields]
    lines += ["", *(f"1. {_escape(_shorten(op.describe()))}" for op in change.ops), "", "</details>"]
    return "\n".join(lines) + "\n"


def _section_heading(ordered: list[PlanChange], index: int) -> str:
    billing = ordered[index].action in BILLING_ORDER
    if index > 0 and (ordered[index - 1].action in BILLING_ORDER) == billing:
        return ""
    return "\n#### Billing changes\n" if billing else "\n#### Other changes\n"


def _block(plan: Plan, change: PlanChange) -> str:
    marker, _ = MARKERS[change.action]
    values = change.after or change.before or {}
    name = f" ({_escape(_shorten(str(values['name'])))})" if "name" in values else ""
    lines = [
        "",
        f"<details><summary>{marker} <b>{_escape(change.address)}</b>{name}: "
        f"{change.action.value.replace('-', ' ')}</summary>",
        "",
    ]
    if change.before is None and change.after is not None:
        lines += ["| field | value |", "| --- | --- |"]
        lines += [f"| {_escape(path)} | {_cell(value)} |" for path, value in flatten(change.after)]
        lines.append("")
    elif change.fields:
        lines += ["| field | before | after |", "| --- | --- | --- |"]
        lines += [f"| {_escape(f.path)} | {_cell(f.before)} | {_cell(f.after)} |" for f in change.fields]
        lines.append("")
    lines += [f"1. {_escape(_shorten(op.describe()))}" for op in change.ops]
    lines += ["", "</details>"]
    warning = subscriptions_note(plan, change)
    if warning:
        lines += ["", warning]
    return "\n".join(lines) + "\n"


def _left_out(ordered: list[PlanChange], shown: int) -> str:
    rest = ordered[shown:]
    billing = sum(1 for change in rest if change.action in BILLING_ORDER)
    of_which = f" ({billing} of them billing changes)" if billing else ""
    return f"\n… and {len(rest)} more changes not shown{of_which}: {_FULL_PLAN_HINT}.\n"


def _cell(value: Any) -> str:
    return _escape(_shorten(_show(value)))


def _shorten(text: str) -> str:
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def _escape(text: str) -> str:
    """Catalog text that cannot close a `<details>` block, split a table row, open a code span, carry a
    control character or a bidirectional override (shown escaped, as `render_text` shows them), or
    mention anyone (a plan called "@octocat" never notifies a GitHub user or team)."""
    return _MENTION.sub("@&#8205;", printable(text).translate(_ESCAPES))
