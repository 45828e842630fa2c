"""Results → text for people or JSON for machines; pure functions, no I/O (the CLI writes them).

One module per result: `text`, `json` and `markdown` (the pull-request comment) render a `Plan`;
`drift` a drift report; `doctor` the doctor's checks; `checkout` a sandbox checkout.
"""
