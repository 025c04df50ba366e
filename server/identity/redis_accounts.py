"""The account store in Redis: users, sessions and clinic keys shared by every node.

Keys (hash tag ``{accounts}``; no personal data in a name, see :mod:`server.redis_state`)::

    tandtid:{accounts}:user:<uid>            hash: email, name, role, clinic, password_hash, created_at
    tandtid:{accounts}:email:<hmac>          the uid registered with that e-mail (SET NX: one wins)
    tandtid:{accounts}:users                 sorted set of uids by created_at (ties by uid)
    tandtid:{accounts}:role:<role>           the same, per role
    tandtid:{accounts}:session:<sid>         hash: user_id, created_at, expires_at; expires with it
    tandtid:{accounts}:user-sessions:<uid>   set of the user's sids (ended all at once)
    tandtid:{accounts}:key:<sha256>          the clinic of a clinic key (never the key)
    tandtid:{accounts}:clinic-keys:<clinic>  set of the clinic's key digests
    tandtid:{accounts}:clinic-key-at:<clinic> when its newest key was made (epoch seconds)
    tandtid:{accounts}:changed               pub/sub: "s <sid>" | "sessions" | "keys"

Each write that spans keys is one Lua script (atomic). Ending a session, changing a password
and revoking keys publish a notice; every node drops the cached entry when it hears it, so
a token signed out on one node is refused on every node (within the notice's delivery time,
sub-millisecond on a LAN; a node whose subscription broke drops all it cached).
"""

from __future__ import annotations

from collections.abc import Iterable

from argon2 import PasswordHasher

from server.identity.accounts import Accounts, Role, Session, User
from server.redis_state import Lookup, Notices, connect

PREFIX = "tandtid:{accounts}:"
USERS = PREFIX + "users"
CHANNEL = PREFIX + "changed"
_USER_FIELDS = ("email", "name", "role", "clinic")

# Safe to run twice (a reply lost with the connection, the call sent again): the e-mail's owner
# is this very uid then, and that is a success.
_CREATE_USER = """
local owner = redis.call('GET', KEYS[1])
if owner then
  if owner == ARGV[1] then return 1 end
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], 'email', ARGV[2], 'name', ARGV[3], 'role', ARGV[4], 'clinic', ARGV[5],
           'password_hash', ARGV[6], 'created_at', ARGV[7])
redis.call('ZADD', KEYS[3], ARGV[7], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[7], ARGV[1])
return 1
"""

_REPLACE_HASH = """
if redis.call('HGET', KEYS[1], 'password_hash') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'password_hash', ARGV[2])
end
return 0
"""

# KEYS: user-sessions; ARGV: session key prefix. Deletes every session of the user.
_END_ALL = """
local ended = 0
for _, sid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  ended = ended + redis.call('DEL', ARGV[1] .. sid)
end
redis.call('DEL', KEYS[1])
"""

_SET_PASSWORD = (
    """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'password_hash', ARGV[2])
"""
    + _END_ALL
    + "return 1\n"
)

_DELETE_SESSIONS = _END_ALL + "return ended\n"

_OPEN_SESSION = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'user_id', ARGV[1], 'created_at', ARGV[2], 'expires_at', ARGV[3])
redis.call('PEXPIREAT', KEYS[2], ARGV[4])
redis.call('SADD', KEYS[3], ARGV[5])
if redis.call('PTTL', KEYS[3]) < tonumber(ARGV[6]) then  -- PTTL, not PEXPIRETIME: Redis 6.2 too
  redis.call('PEXPIRE', KEYS[3], ARGV[6])
end
return 1
"""

_END_SESSION = """
local uid = redis.call('HGET', KEYS[1], 'user_id')
redis.call('DEL', KEYS[1])
if uid then redis.call('SREM', ARGV[1] .. uid, ARGV[2]) end
return 0
"""

# KEYS: clinic-keys, clinic-key-at; ARGV: key prefix. Deletes every key of the clinic.
_REVOKE_ALL = """
local revoked = 0
for _, digest in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  revoked = revoked + redis.call('DEL', ARGV[1] .. digest)
end
redis.call('DEL', KEYS[1], KEYS[2])
"""

_REVOKE_KEYS = _REVOKE_ALL + "return revoked\n"

# ... then ARGV: digest, clinic, now: the clinic's one key.
_REPLACE_KEYS = (
    _REVOKE_ALL
    + """
redis.call('SET', ARGV[1] .. ARGV[2], ARGV[3])
redis.call('SADD', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[4])
return revoked
"""
)

# KEYS: key:<digest>, clinic-keys, clinic-key-at; ARGV: clinic, digest, now. One more key of the clinic.
_INSERT_KEY = """
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('SET', KEYS[3], ARGV[3])
return 0
"""

# KEYS: user, users, role:<old>, role:<new>; ARGV: uid, old role, clinic, new role.
_SET_ROLE = """
local found = redis.call('HMGET', KEYS[1], 'role', 'clinic')
if found[1] ~= ARGV[2] or found[2] ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], 'role', ARGV[4])
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], score or 0, ARGV[1])
return 1
"""

# KEYS: user-sessions, user, email, users, role; ARGV: session prefix, uid.
_DELETE_USER = (
    """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
"""
    + _END_ALL
    + """
redis.call('DEL', KEYS[2])
if redis.call('GET', KEYS[3]) == ARGV[2] then redis.call('DEL', KEYS[3]) end
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('ZREM', KEYS[5], ARGV[2])
return 1
"""
)


def _user_key(uid: str) -> str:
    return PREFIX + "user:" + uid


def _session_key(sid: str) -> str:
    return PREFIX + "session:" + sid


class RedisAccountStore(Accounts):
    """Accounts in the Redis at ``url`` (see the module docstring for its keys)."""

    def __init__(self, url: str, *, hasher: PasswordHasher | None = None) -> None:
        super().__init__(hasher)
        self._redis = connect(url)
        self._lookup = Lookup(self._redis, "accounts")
        self._create_user = self._redis.register_script(_CREATE_USER)
        self._replace = self._redis.register_script(_REPLACE_HASH)
        self._set_pw = self._redis.register_script(_SET_PASSWORD)
        self._open = self._redis.register_script(_OPEN_SESSION)
        self._end = self._redis.register_script(_END_SESSION)
        self._end_all = self._redis.register_script(_DELETE_SESSIONS)
        self._revoke = self._redis.register_script(_REVOKE_KEYS)
        self._replace_all = self._redis.register_script(_REPLACE_KEYS)
        self._role = self._redis.register_script(_SET_ROLE)
        self._remove = self._redis.register_script(_DELETE_USER)
        self._add_key = self._redis.register_script(_INSERT_KEY)
        self._notices = Notices(
            self._redis, CHANNEL, self._heard, lambda: self._drop(sessions=True, keys=True)
        )

    # -- cross-node cache coherence ------------------------------------------------------------------

    def _announce(self, *, sid: str | None = None, sessions: bool = False, keys: bool = False) -> None:
        if sid is not None:
            self._notices.announce("s " + sid)
        if sessions:
            self._notices.announce("sessions")
        if keys:
            self._notices.announce("keys")

    def _heard(self, notice: str) -> None:
        kind, _, sid = notice.partition(" ")
        if kind == "s":
            self._drop(sid=sid)
        elif kind == "keys":
            self._drop(keys=True)
        else:  # "sessions", or a notice this version does not know: drop more, never less
            self._drop(sessions=True, keys=kind != "sessions")

    # -- users ------------------------------------------------------------------------------------------

    def _email_key(self, email: str) -> str:
        return PREFIX + "email:" + self._lookup.digest(email)

    def _insert_user(self, user: User, password_hash: str, created_at: float) -> bool:
        keys = [self._email_key(user.email), _user_key(user.id), USERS, PREFIX + "role:" + user.role.value]
        args = [
            user.id,
            user.email,
            user.name,
            user.role.value,
            user.clinic or "",
            password_hash,
            repr(created_at),
        ]
        return bool(self._create_user(keys=keys, args=args))

    @staticmethod
    def _user(uid: str, fields: list[str | None]) -> User | None:
        email, name, role, clinic = fields[:4]
        if email is None or name is None or role is None:
            return None
        return User(uid, email, name, Role(role), clinic or None)

    def _credentials(self, email: str) -> tuple[User, str] | None:
        uid = self._redis.get(self._email_key(email))
        if uid is None:
            return None
        fields = self._redis.hmget(_user_key(uid), [*_USER_FIELDS, "password_hash"])
        user = self._user(uid, fields)
        return None if user is None or fields[4] is None else (user, fields[4])

    def _replace_hash(self, user_id: str, old: str, new: str) -> None:
        self._replace(keys=[_user_key(user_id)], args=[old, new])

    def _set_password(self, user_id: str, password_hash: str) -> None:
        keys = [PREFIX + "user-sessions:" + user_id, _user_key(user_id)]
        self._set_pw(keys=keys, args=[PREFIX + "session:", password_hash])

    def _set_role(self, user: User, role: Role) -> bool:
        keys = [_user_key(user.id), USERS, PREFIX + "role:" + user.role.value, PREFIX + "role:" + role.value]
        return bool(self._role(keys=keys, args=[user.id, user.role.value, user.clinic or "", role.value]))

    def _delete_user(self, user: User) -> bool:
        keys = [
            PREFIX + "user-sessions:" + user.id,
            _user_key(user.id),
            self._email_key(user.email),
            USERS,
            PREFIX + "role:" + user.role.value,
        ]
        return bool(self._remove(keys=keys, args=[PREFIX + "session:", user.id]))

    def get(self, user_id: str) -> User | None:
        return self._user(user_id, self._redis.hmget(_user_key(user_id), list(_USER_FIELDS)))

    def get_many(self, user_ids: Iterable[str]) -> dict[str, User]:
        ids = list(dict.fromkeys(user_ids))
        pipe = self._redis.pipeline(transaction=False)
        for uid in ids:
            pipe.hmget(_user_key(uid), list(_USER_FIELDS))
        users = (self._user(uid, fields) for uid, fields in zip(ids, pipe.execute(), strict=True))
        return {user.id: user for user in users if user is not None}

    def names(self, user_ids: Iterable[str]) -> dict[str, str]:
        ids = list(dict.fromkeys(user_ids))
        pipe = self._redis.pipeline(transaction=False)
        for uid in ids:
            pipe.hget(_user_key(uid), "name")
        return {uid: name for uid, name in zip(ids, pipe.execute(), strict=True) if name is not None}

    def users(self, role: Role | None = None) -> list[User]:
        index = USERS if role is None else PREFIX + "role:" + Role(role).value
        ids: list[str] = self._redis.zrange(index, 0, -1)
        pipe = self._redis.pipeline(transaction=False)
        for uid in ids:
            pipe.hmget(_user_key(uid), list(_USER_FIELDS))
        found = (self._user(uid, fields) for uid, fields in zip(ids, pipe.execute(), strict=True))
        return [u for u in found if u is not None]

    # -- sessions ---------------------------------------------------------------------------------------

    def _insert_session(self, sid: str, user_id: str, now: float, expires_at: float) -> bool:
        keys = [_user_key(user_id), _session_key(sid), PREFIX + "user-sessions:" + user_id]
        ttl_ms = max(1, int((expires_at - now) * 1000))
        args: list[str | int] = [
            user_id,
            repr(now),
            repr(float(expires_at)),
            int(expires_at * 1000),
            sid,
            ttl_ms,
        ]
        return bool(self._open(keys=keys, args=args))

    def _load_session(self, sid: str) -> Session | None:
        uid, expires_at = self._redis.hmget(_session_key(sid), ["user_id", "expires_at"])
        if uid is None or expires_at is None:
            return None
        role, clinic = self._redis.hmget(_user_key(uid), ["role", "clinic"])
        if role is None:
            return None
        return Session(sid, uid, Role(role), clinic or None, float(expires_at))

    def _delete_session(self, sid: str) -> None:
        self._end(keys=[_session_key(sid)], args=[PREFIX + "user-sessions:", sid])

    def _delete_sessions(self, user_id: str) -> int:
        return int(self._end_all(keys=[PREFIX + "user-sessions:" + user_id], args=[PREFIX + "session:"]))

    # -- clinic API keys --------------------------------------------------------------------------------

    def _insert_key(self, digest: str, clinic: str, now: float) -> None:
        keys = [
            PREFIX + "key:" + digest,
            PREFIX + "clinic-keys:" + clinic,
            PREFIX + "clinic-key-at:" + clinic,
        ]
        self._add_key(keys=keys, args=[clinic, digest, repr(now)])

    def _key_created(self, clinic: str) -> float | None:
        at: str | None = self._redis.get(PREFIX + "clinic-key-at:" + clinic)
        if at is not None:
            return float(at)
        # a key made before its time was kept: live, made at an unknown time
        return 0.0 if self._redis.scard(PREFIX + "clinic-keys:" + clinic) else None

    def _replace_keys(self, digest: str, clinic: str, now: float) -> None:
        keys = [PREFIX + "clinic-keys:" + clinic, PREFIX + "clinic-key-at:" + clinic]
        self._replace_all(keys=keys, args=[PREFIX + "key:", digest, clinic, repr(now)])

    def _load_key(self, digest: str) -> str | None:
        clinic: str | None = self._redis.get(PREFIX + "key:" + digest)
        return clinic

    def _delete_keys(self, clinic: str) -> int:
        keys = [PREFIX + "clinic-keys:" + clinic, PREFIX + "clinic-key-at:" + clinic]
        return int(self._revoke(keys=keys, args=[PREFIX + "key:"]))

    def close(self) -> None:
        self._notices.close()
        self._redis.close()
