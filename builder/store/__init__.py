"""Store: built wheels given their identity and kept (local cache, index pages, shared stores, serving)."""
