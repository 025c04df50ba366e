"""Notifications: e-mail (SMTP or the local outbox) for bookings made, cancelled and moved, and
reminders before appointments — read from the journal, at least once per message key (a crash
between sending and recording repeats a message with the same Message-ID; see ``ledger``).

Modules: ``feed`` (journal -> facts, the cursor loop, shared with ``server.consumers.webhooks``),
``ledger`` (cursors + sent keys in SQLite), ``messages`` (templates, .ics), ``mailer``
(SMTP / outbox), ``outbox`` (the log of messages written), ``reminders`` (lead times, schedule),
``notifier`` (the consumer). Standalone: ``python -m server.consumers.notify --data DIR``.
"""
