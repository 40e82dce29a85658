"""The Redis store as the service runs it on AWS: ElastiCache Serverless for Valkey, IAM authentication
(components/realtime/redis_store.py, ElastiCacheIamCredentials), the user's ACL from the CDK stack.

What ElastiCache checks (the token's signature) cannot run here; what can, runs on a real redis-server: the
AUTH redis-py sends on each new connection is the provider's (user, token) and the URL's user is not
sent beside it, and the ACL access string the stack gives the user admits every command the store sends
(its Lua script included) and nothing outside its key prefix. The token is checked against the request
https://docs.aws.amazon.com/AmazonElastiCache/latest/dg/auth-iam.html describes: ``GET http://<cache
name>/?Action=connect&User=<user>`` (+ ``ResourceType=ServerlessCache``), SigV4 presigned for
``elasticache``, 900 s, the scheme left off (also aws-samples/elasticache-iam-auth-demo-app at abcf116,
IAMAuthTokenRequest.java).
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, quote, urlsplit

import pytest
import redis
from botocore.credentials import Credentials

from components.realtime.redis_store import ACCESS_STRING, ElastiCacheIamCredentials, RedisStore
from components.realtime.store import StoredEvent
from tests.redis_server import redis_server

USER, CACHE = "ecomrec-inference", "ecomrec-store"


def sigv4_signature(token: str, secret: str, region: str) -> str:
    """The signature of a presigned GET, recomputed from the SigV4 documentation
    (https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html): canonical request (method,
    path, the query sorted and RFC 3986-encoded without the signature, the host header, the empty payload's
    SHA-256), string to sign, key derived from the secret, date, region and service ``elasticache``."""
    parts = urlsplit("http://" + token)
    pairs = sorted((k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "X-Amz-Signature")
    canonical_query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in pairs)
    canonical = "\n".join(["GET", parts.path, canonical_query, f"host:{parts.netloc}\n", "host",
                           hashlib.sha256(b"").hexdigest()])
    stamp = dict(pairs)["X-Amz-Date"]
    scope = f"{stamp[:8]}/{region}/elasticache/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (stamp[:8], region, "elasticache", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def test_token_is_the_documented_presigned_connect_request() -> None:
    clock = [1_000.0]
    provider = ElastiCacheIamCredentials(USER, "Ecomrec-Store", "eu-west-1",
                                         credentials=Credentials("AKIDEXAMPLE", "secret", "session-token"),
                                         clock=lambda: clock[0])
    user, token = provider.get_credentials()
    assert user == USER
    assert not token.startswith(("http://", "https://"))
    parts = urlsplit("http://" + token)
    assert (parts.netloc, parts.path) == (CACHE, "/")  # the cache name, lowercased: not the endpoint
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query["Action"] == "connect" and query["User"] == USER
    assert query["ResourceType"] == "ServerlessCache"
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query["X-Amz-Expires"] == "900"
    assert query["X-Amz-Credential"].startswith("AKIDEXAMPLE/") and query["X-Amz-Credential"].endswith(
        "/eu-west-1/elasticache/aws4_request")
    assert query["X-Amz-Security-Token"] == "session-token"
    assert query["X-Amz-SignedHeaders"] == "host"
    assert query["X-Amz-Signature"] == sigv4_signature(token, "secret", "eu-west-1")
    # A token signs new connections for 10 minutes, well inside its 15; then a fresh one is signed.
    signed: list[str] = []

    def fresh() -> str:
        signed.append("new")
        return "fresh"

    provider.token = fresh  # type: ignore[method-assign]
    clock[0] += 599
    assert provider.get_credentials()[1] == token and not signed
    clock[0] += 1
    assert provider.get_credentials()[1] == "fresh" and signed == ["new"]


def test_url_without_a_user_or_region_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    with pytest.raises(ValueError, match="needs the user"):
        ElastiCacheIamCredentials.from_url("rediss://cache.example:6379", CACHE)
    assert ElastiCacheIamCredentials.from_url(f"rediss://{USER}@cache.example:6379", CACHE).region == "eu-west-1"
    from components.serving.settings import ServingSettings

    with pytest.raises(ValueError, match="over TLS only"):
        ServingSettings(model="s3://b/k", store_url="redis://u@h:6379", store_iam_cache=CACHE)


class FixedToken(ElastiCacheIamCredentials):
    """The provider with its token replaced by the password the test server's ACL holds."""

    def token(self) -> str:
        return "token-of-the-moment"


@pytest.mark.parametrize("cluster", [False, True], ids=["standalone", "cluster-mode"])
def test_the_store_authenticates_as_the_provider_says_and_the_acl_admits_it(cluster: bool, tmp_path: Path) -> None:
    """Both ways a server may run; ElastiCache Serverless runs in cluster mode (the service's
    ECOMREC_STORE_CLUSTER), where redis-py's cluster pipeline sends the store's script unloaded."""
    with redis_server(tmp_path, cluster=cluster) as server:
        admin = redis.Redis.from_url(server.url)
        admin.execute_command("ACL", "SETUSER", USER, "reset", ">token-of-the-moment", *ACCESS_STRING.split())
        admin.execute_command("ACL", "SETUSER", "default", "off")  # like the stack's disabled default user
        url = f"redis://{USER}@127.0.0.1:{server.port}/0"
        provider = FixedToken(USER, CACHE, "eu-west-1")
        store = RedisStore(url, timeout_s=1.0, credential_provider=provider, cluster=cluster)
        event = StoredEvent(key="id:a", user_id="u1", item_id="i1", event_type="view", timestamp_us=1,
                            quantity=1, price=None, session_id=None)
        assert store.add([event]) == 1
        assert store.known([event]) == {"id:a"}
        assert store.user_events("u1") == [event]
        store.clear()
        assert store.user_events("u1") == []
        # The ACL keeps the user to the store's keys and away from administration.
        with pytest.raises(redis.exceptions.NoPermissionError):
            store.client.set("other:key", "1")
        with pytest.raises(redis.exceptions.NoPermissionError):
            store.client.flushall()
        store.close()
        # Without the provider the URL's user has no password: refused.
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis.from_url(url, socket_timeout=1.0).ping()


class FailingCredentials:
    """botocore's refreshable credentials when their refresh fails (IRSA's AssumeRoleWithWebIdentity or the
    instance metadata out of reach): get_frozen_credentials raises a botocore error (botocore/credentials.py,
    RefreshableCredentials._protected_refresh re-raises the fetcher's error, botocore 1.44.8)."""

    def get_frozen_credentials(self) -> object:
        from botocore.exceptions import CredentialRetrievalError

        raise CredentialRetrievalError(provider="assume-role-with-web-identity", error_msg="sts out of reach")


@pytest.mark.parametrize("cluster", [False, True], ids=["standalone", "cluster-mode"])
def test_credentials_that_cannot_refresh_make_the_store_unavailable_not_an_error(cluster: bool, tmp_path: Path
                                                                                 ) -> None:
    """The service turns StoreUnavailableError into a degraded answer; any other error is a 5xx."""
    from components.realtime.store import StoreUnavailableError

    with redis_server(tmp_path, cluster=cluster) as server:
        provider = ElastiCacheIamCredentials(USER, CACHE, "eu-west-1", credentials=FailingCredentials())
        store = RedisStore(f"redis://{USER}@127.0.0.1:{server.port}/0", timeout_s=1.0,
                           credential_provider=provider, cluster=cluster)
        with pytest.raises(StoreUnavailableError, match="credentials"):
            store.user_events("u1")
        store.close()
