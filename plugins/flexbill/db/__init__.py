"""Database access: the schema, connections, dialect differences and SQL files."""
