"""lmi-mount tests; a package so that ``tests.support`` imports from every test directory."""
