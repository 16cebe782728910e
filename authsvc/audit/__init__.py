"""The audit trail: append-only, hash-chained security events.

Every event is written by :func:`authsvc.audit.service.record` inside the database transaction of
the change it records, so that the change and its event are committed together or not at all.
"""
