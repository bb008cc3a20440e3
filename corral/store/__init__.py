"""Storage: tables, migrations, and the one database access layer."""
