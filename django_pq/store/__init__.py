"""The data layer: the SQL statements against the pq_* tables, each named."""
