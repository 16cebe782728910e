"""Sign-in: the pages and API the authorization endpoint sends a browser to (INTERFACE §4)."""
