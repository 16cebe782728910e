"""The national directory of health professionals, as imported from the agency's files."""
