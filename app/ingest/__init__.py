"""Durable, ordered ingestion (ARCHITECTURE §5): the chunk log, the workers that apply each chunk's
operations exactly once and in order, and the wake-ups between them."""
