"""Accounts: what a professional activates, signs in with, and what the helpdesk locks."""
