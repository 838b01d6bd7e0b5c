"""Analyses over stores; each returns polars DataFrames with stable column names."""
