"""kuploy-reconciler: the kuploy-cloud plan catalog, reconciled with cloud_plans and Stripe."""
