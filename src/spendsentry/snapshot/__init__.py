"""Explicit, versioned snapshots of a worker partition's state, as plain data."""
