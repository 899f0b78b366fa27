"""Keeping recipes current with upstream: the releases a recipe does not know (`builder recipe
check`) and a new release written into a recipe (`builder recipe add-version`)."""
