"""Numbered schema migrations.

Each module ``NNNN_name.py`` defines ``apply(db)``; they run in order, each
in its own transaction, and are recorded in the ``schema_migration`` table.
Never edit an applied migration: add the next number.
"""
