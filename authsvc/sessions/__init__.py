"""Provider sessions: one per browser, shared by every relying service it signs in to (SSO)."""
