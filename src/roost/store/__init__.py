"""Storage: the schema, the database port and its SQLite and PostgreSQL backends, migrations."""
