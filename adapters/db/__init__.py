"""Persistence: SQLAlchemy 2 on SQLite or PostgreSQL (psycopg 3), Alembic migrations, a unit of work."""
