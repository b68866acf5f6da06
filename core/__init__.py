"""Shared ideas with one owner each, below every other package but config."""
