"""Outgoing mail: composing what authsvc sends, and handing it to SMTP or the mail drop."""
