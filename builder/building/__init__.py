"""Building: a Plan turned into a wheel (source, patches, pins, backends, compile gate, costs)."""
