"""Results → text for people or JSON for machines; pure functions, no I/O (the CLI writes them).

One module per result: `text`, `json` and `markdown` (the pull-request comment) render a `Plan`;
`drift` a drift report; `doctor` the doctor's checks; `outcome` an apply's summary and the
mass-archive warning. (The sandbox's status lines and checkout report are rendered in
`sandbox/status.py` and `sandbox/checkout.py`: the core never imports the sandbox.)
"""
