"""The outbox: messages to the outside world (mail, back-channel logout) written in the same
transaction as the change that causes them, and delivered afterwards, with retries, by workers.

A mail server or a relying service that is down delays a message; it never loses it and never
fails the user's request (SECURITY "Nothing lost, nothing half-done").
"""
