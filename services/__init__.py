"""Thin runnable services over the metarec library."""
