"""Bootstrap plans written by `seed` on first boot, before the first license sync replaces them."""
