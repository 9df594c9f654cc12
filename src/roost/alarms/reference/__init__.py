"""Reference data: tenant-owned lookup tables (a product catalog, store facts) rules join on."""
