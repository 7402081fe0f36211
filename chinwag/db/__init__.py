"""PostgreSQL: the pool, the embedded server, migrations, and the SQL of each table."""
