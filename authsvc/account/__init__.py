"""The professional's own account pages: who is signed in, their sessions, their password."""
