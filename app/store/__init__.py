"""Persistence (ARCHITECTURE §7): SQLAlchemy 2 async models, the engine and its transactions,
repositories mapping rows to the memory domain, and the Alembic migrations run from code."""
