"""The OpenID Connect provider (INTERFACE §3): what relying services see.

Built on Authlib's authorization server: Authlib parses and validates the protocol (client
authentication, redirect URIs, PKCE, grants, revocation, introspection, RFC 9207), authsvc
provides the storage, the tokens, the levels of assurance and the sessions.
"""
