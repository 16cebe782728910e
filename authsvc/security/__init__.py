"""Everything that touches a secret goes through this package: keyed hashes, constant-time
comparisons, random codes and password hashing."""
