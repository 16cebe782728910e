"""Smartcards bound to accounts: binding at activation, and (helpdesk) revocation."""
