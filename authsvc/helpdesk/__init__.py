"""The helpdesk: revoke a lost card everywhere at once, and support professionals (INTERFACE §5)."""
