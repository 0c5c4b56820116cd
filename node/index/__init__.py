"""The index: peewee models, database setup, migrations and the query engine."""
