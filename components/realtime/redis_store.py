"""The online store on Redis / Valkey (redis-py): ElastiCache Serverless for Valkey on AWS, a real
``redis-server`` in tests.

Per user, under one hash tag (``{<user_id>}``) so every key a script touches lives in one cluster slot:
``<prefix>{<user>}:ev`` is a sorted set of the user's events (score = event time in microseconds, member
= the event encoded with its idempotency key, so members are unique), ``<prefix>{<user>}:v`` is the user's
version (store.py: a random token, set by every add that stores an event), ``<prefix>{<user>}:k:<key>``
marks an acknowledged key (expires after ``key_ttl_days``). One Lua script per user stores the new events,
trims the set and sets the version, atomically: two workers adding the same retry store one copy, and a
reader never sees new events under an old version. Another reads the version and, only when it is not the
one the reader holds, the events, in one round trip. (During a rolling upgrade from a release without
versions, an event added by an old pod leaves the version as it was: a new pod holding that user may answer
from their previous events until the user's next event reaches a new pod.) Every call is bounded by
``timeout_s`` (socket and connect timeouts); any failure is a StoreUnavailableError.
"""

from __future__ import annotations

import os
import secrets
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, cast
from urllib.parse import urlsplit, urlunsplit

import orjson

from components.realtime.store import StoredEvent, StoreLimits, StoreUnavailableError, by_user

DEFAULT_PREFIX: Final = "ecomrec:"
# The ACL of the service's user on ElastiCache (the CDK stack's AWS::ElastiCache::User; ElastiCache access
# strings are Valkey ACL rules): our keys only, no administrative or dangerous command.
ACCESS_STRING: Final = f"on ~{DEFAULT_PREFIX}* +@all -@dangerous -@admin"
IAM_TOKEN_SECONDS: Final = 900  # "The IAM authentication token is valid for 15 minutes" (auth-iam.html)
IAM_TOKEN_REUSE_S: Final = 600  # a token signs new connections for 10 minutes, then a fresh one is made

# KEYS[1] = the user's event set, KEYS[2] = their version, KEYS[3..] = the events' key markers; ARGV[1] key
# ttl (s), ARGV[2] max events, ARGV[3] max age (us), ARGV[4] the new version, ARGV[5..] (score, member) per
# event. Returns the number stored.
_ADD = """
local added = 0
for i = 3, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) then
    redis.call('ZADD', KEYS[1], ARGV[5 + 2 * (i - 3)], ARGV[6 + 2 * (i - 3)])
    added = added + 1
  end
end
if added > 0 then
  redis.call('SET', KEYS[2], ARGV[4])
  local n = redis.call('ZCARD', KEYS[1])
  local keep = tonumber(ARGV[2])
  if n > keep then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - keep - 1) end
  local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if newest[2] then
    local oldest = tonumber(newest[2]) - tonumber(ARGV[3])
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%.0f', oldest))
  end
end
return added
"""

# KEYS[1] = the user's event set, KEYS[2] = their version; ARGV[1] the version the caller holds ("": none).
# Returns {version} when it is the caller's, else {version or nil, members oldest first}.
_READ = """
local version = redis.call('GET', KEYS[2])
if version and version == ARGV[1] then return {version} end
return {version, redis.call('ZRANGE', KEYS[1], 0, -1)}
"""


def _encode(e: StoredEvent) -> bytes:
    return orjson.dumps([e.key, e.item_id, e.event_type, e.timestamp_us, e.quantity, e.price, e.session_id])


def _decode(user_id: str, member: bytes) -> StoredEvent:
    key, item, kind, ts, qty, price, session = orjson.loads(member)
    return StoredEvent(key=key, user_id=user_id, item_id=item, event_type=sys.intern(kind), timestamp_us=ts,
                       quantity=qty, price=price, session_id=session)


class ElastiCacheIamCredentials:
    """ElastiCache IAM authentication for redis-py: the user's name and, as its password, an IAM token (a
    SigV4-presigned ``connect`` request, the scheme left off) signed with the process's AWS credentials (on
    EKS, the pod's Pod Identity role, which needs ``elasticache:Connect`` on the cache and the user).

    From https://docs.aws.amazon.com/AmazonElastiCache/latest/dg/auth-iam.html: the request is
    ``GET http://<cache name>/?Action=connect&User=<user id>`` (serverless caches add
    ``ResourceType=ServerlessCache``), signed for the service ``elasticache`` in the cache's region, valid 15
    minutes; the IAM-enabled user's id and name are the same; TLS is required. The same request as the AWS
    sample's IAMAuthTokenRequest.java (aws-samples/elasticache-iam-auth-demo-app at abcf116). redis-py asks
    for credentials on every new connection (AUTH at connect), so a pool reconnecting after ElastiCache
    closes an IAM connection (at 12 hours) signs a fresh token. (redis-py's CredentialProvider protocol:
    ``get_credentials``; not subclassed, so this module and the CDK app need no redis-py to import.)"""

    def __init__(self, user: str, cache_name: str, region: str, *, serverless: bool = True,
                 credentials: Any | None = None, clock: Callable[[], float] = time.time) -> None:
        self.user = user
        self.cache_name = cache_name.lower()
        self.region = region
        self.serverless = serverless
        self._credentials = credentials
        self._clock = clock
        self._lock = threading.Lock()
        self._token: tuple[float, str] | None = None

    @classmethod
    def from_url(cls, url: str, cache_name: str) -> ElastiCacheIamCredentials:
        """The user of ``rediss://USER@HOST:PORT``; region and credentials from botocore's usual chain."""
        import botocore.session

        user = urlsplit(url).username
        if not user:
            raise ValueError(f"ECOMREC_STORE_URL {url!r}: IAM authentication needs the user, rediss://USER@HOST")
        session = botocore.session.get_session()
        region = os.environ.get("AWS_REGION") or session.get_config_variable("region")
        if not region:
            raise ValueError("ElastiCache IAM authentication: no AWS region (set AWS_REGION)")
        return cls(user, cache_name, region, credentials=session.get_credentials())

    def token(self) -> str:
        from botocore.auth import SigV4QueryAuth
        from botocore.awsrequest import AWSRequest
        from botocore.exceptions import BotoCoreError, ClientError

        if self._credentials is None:
            raise StoreUnavailableError("ElastiCache IAM authentication: no AWS credentials")
        params = {"Action": "connect", "User": self.user}
        if self.serverless:
            params["ResourceType"] = "ServerlessCache"
        request = AWSRequest(method="GET", url=f"http://{self.cache_name}/", params=params)
        try:
            frozen = self._credentials.get_frozen_credentials()
        except (BotoCoreError, ClientError) as error:  # a refresh failed (STS, instance metadata out of reach)
            # redis-py passes a provider's error through unwrapped: anything else would be a 5xx, not degraded
            raise StoreUnavailableError(f"ElastiCache IAM authentication: AWS credentials: {error}") from error
        SigV4QueryAuth(frozen, "elasticache", self.region, expires=IAM_TOKEN_SECONDS).add_auth(request)
        return str(request.url).removeprefix("http://")

    def get_credentials(self) -> tuple[str, str]:
        with self._lock:
            now = self._clock()
            if self._token is None or now - self._token[0] >= IAM_TOKEN_REUSE_S:
                self._token = (now, self.token())
            return self.user, self._token[1]


class RedisStore:
    def __init__(self, url: str, *, limits: StoreLimits | None = None, timeout_s: float = 0.05,
                 prefix: str = DEFAULT_PREFIX, client: Any | None = None,
                 credential_provider: Any | None = None, cluster: bool = False) -> None:
        """``cluster``: the server runs in cluster mode (ElastiCache Serverless is "only available in a
        cluster-mode enabled configuration", https://docs.aws.amazon.com/AmazonElastiCache/latest/dg/WorkingWithRedis.html):
        redis-py's cluster client, connected on first use (its constructor asks the server for the slot
        map, and the service must start while the store is down)."""
        import redis
        from redis.cluster import RedisCluster
        from redis.exceptions import RedisClusterException

        self.limits = limits or StoreLimits()
        self.prefix = prefix
        self.url = url
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, RedisClusterException, OSError)
        if credential_provider is not None:  # the provider names the user: redis-py refuses both
            parts = urlsplit(url)
            url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        options: dict[str, Any] = dict(socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                       credential_provider=credential_provider)
        if not cluster:
            options.update(retry_on_timeout=False, health_check_interval=0)
        kind: Any = RedisCluster if cluster else redis.Redis
        self._connect: Any = (lambda: client) if client is not None else (lambda: kind.from_url(url, **options))
        self._client: Any = None
        self._add: Any = None
        self._read: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._connect()
            self._add = self._client.register_script(_ADD)
            self._read = self._client.register_script(_READ)
        return self._client

    def _events_key(self, user_id: str) -> str:
        return f"{self.prefix}{{{user_id}}}:ev"

    def _version_key(self, user_id: str) -> str:
        return f"{self.prefix}{{{user_id}}}:v"

    def _marker(self, user_id: str, key: str) -> str:
        return f"{self.prefix}{{{user_id}}}:k:{key}"

    def _fail(self, error: BaseException) -> StoreUnavailableError:
        return StoreUnavailableError(f"online store {self.url}: {type(error).__name__}: {error}")

    def known(self, events: Sequence[StoredEvent]) -> set[str]:
        if not events:
            return set()
        try:
            pipe = self.client.pipeline(transaction=False)
            for e in events:
                pipe.exists(self._marker(e.user_id, e.key))
            found = pipe.execute()
        except self._errors as error:
            raise self._fail(error) from error
        return {e.key for e, hit in zip(events, found, strict=True) if hit}

    def add(self, events: Sequence[StoredEvent]) -> int:
        if not events:
            return 0
        limits = self.limits
        ttl = max(1, int(limits.key_ttl_days * 86_400))
        calls: list[tuple[list[str], list[Any]]] = []
        for user, group in by_user(events).items():
            args: list[Any] = [ttl, limits.max_events, limits.max_age_us, secrets.randbits(63)]
            for e in group:
                args += [e.timestamp_us, _encode(e)]
            calls.append(([self._events_key(user), self._version_key(user),
                           *[self._marker(user, e.key) for e in group]], args))
        try:
            return self._run_add(calls)
        except self._errors as error:
            if not _is_noscript(error):
                raise self._fail(error) from error
        # A cluster pipeline sends EVALSHA without loading the script first (redis-py's plain pipeline loads
        # it); a node may also have lost it (restart, scaling). Load it on every primary and run once more:
        # the script is idempotent per key (SET NX), so events stored by the first run are not stored twice.
        try:
            self.client.script_load(_ADD)
            return self._run_add(calls)
        except self._errors as error:
            raise self._fail(error) from error

    def _run_add(self, calls: list[tuple[list[str], list[Any]]]) -> int:
        pipe = self.client.pipeline(transaction=False)
        for keys, args in calls:
            self._add(keys=keys, args=args, client=pipe)
        return int(sum(pipe.execute()))

    def read(self, user_id: str, known: int | None = None) -> tuple[int | None, list[StoredEvent] | None]:
        try:
            client = self.client
            # redis-py's Script loads itself on NOSCRIPT (a restarted node, a cluster node that never had it)
            reply = cast(list[Any], self._read(keys=[self._events_key(user_id), self._version_key(user_id)],
                                               args=["" if known is None else known], client=client))
        except self._errors as error:
            raise self._fail(error) from error
        version = None if reply[0] is None else int(reply[0])
        if len(reply) == 1:
            return version, None
        # Equal scores come back in member order; arrival order is not kept for those (same microsecond).
        return version, [_decode(user_id, m) for m in cast(list[bytes], reply[1])]

    def user_events(self, user_id: str) -> list[StoredEvent]:
        return self.read(user_id)[1] or []

    def clear(self) -> None:
        try:
            for key in self.client.scan_iter(match=f"{self.prefix}*", count=1000):
                self.client.delete(key)
        except self._errors as error:
            raise self._fail(error) from error

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _is_noscript(error: BaseException) -> bool:
    from redis.exceptions import NoScriptError

    return isinstance(error, NoScriptError) or "NOSCRIPT" in str(error) or "No matching script" in str(error)
