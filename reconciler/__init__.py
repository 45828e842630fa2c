"""kuploy-reconciler: the kuploy-cloud plan catalog, reconciled with cloud_plans and Stripe."""


def tool_version() -> str:
    """The installed version, as apply records and saved plans note it ("unknown" from a source tree)."""
    # Imported here: importlib.metadata costs start-up time every `import reconciler.…` would pay.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kuploy-reconciler")
    except PackageNotFoundError:
        return "unknown"
