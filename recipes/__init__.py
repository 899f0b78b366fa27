"""Recipes shipped with builder: package data, read through builder.resources."""
