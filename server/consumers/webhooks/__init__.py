"""Clinic webhooks: signed HTTPS deliveries of booking events, in sequence order, with retries.

Modules: ``signing`` (``sign``/``verify_signature``), ``store`` (endpoints, deliveries, cursors in
``webhooks.sqlite3``), ``dispatcher`` (the journal consumer that queues deliveries and the
sender that posts them). Routes: ``server.http.routes.webhooks``.
"""

from server.consumers.webhooks.signing import HEADER, sign, verify_signature

__all__ = ["HEADER", "sign", "verify_signature"]
