"""Delivery: a stored wheel installed into a target (as a wheel or as artifacts) and proven to work."""
