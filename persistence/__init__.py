"""Durable storage of region journals and snapshots.

``journal`` is the seam (Journal, Entry, Snapshot, errors); ``file_journal.FileJournal``
and ``redis_journal.RedisStreamJournal`` implement it; ``codec`` packs event batches and
snapshots. Import the implementation you need from its module (the Redis one pulls in
redis-py).
"""
