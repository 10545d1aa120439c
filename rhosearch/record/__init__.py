"""The record of a search: the Optuna study, its lease, and the statistics that judge it."""
