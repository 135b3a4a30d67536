"""Inventory: demand series, the demand forecaster and stock arithmetic (reorder advice)."""
