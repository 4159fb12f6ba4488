"""Talking to Redis: connecting (``connect_redis``), telling a Redis failure from a
bug (``is_redis_error``), reading stream entries (``entry_messages``) and spacing
retries (``Backoff``). Shared by the bus, its control listener and the reader.

redis is imported on first use only.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from baqup_agent._keys import MESSAGE_FIELD

if TYPE_CHECKING:
    from redis import Redis
    from redis.cluster import RedisCluster

    RedisClient = Redis | RedisCluster

__all__ = [
    "Backoff",
    "check_redis_url",
    "connect_redis",
    "entry_messages",
    "is_redis_error",
    "pool_connection",
]


class Backoff:
    """Exponential backoff between attempts, with jitter so that a fleet of agents does
    not reconnect in lockstep: the n-th failure in a row waits between
    ``initial x 2^(n-1)`` and twice that, at most ``cap`` (redis-py's
    ``EqualJitterBackoff``)."""

    def __init__(self, initial: float = 0.05, cap: float = 5.0) -> None:
        self.initial = initial
        self.cap = cap
        self.delay = 0.0
        self.failures = 0
        self._next = 0.0

    def failed(self) -> float:
        """Record a failed attempt; return the delay before the next one."""
        from redis.backoff import EqualJitterBackoff

        self.failures += 1
        # min() first: 2 ** failures must not overflow a float in a long outage.
        exponent = min(self.failures - 1, 64)
        self.delay = EqualJitterBackoff(self.cap, 2 * self.initial).compute(exponent)
        self._next = time.monotonic() + self.delay
        return self.delay

    def remaining(self) -> float:
        """Seconds until the next attempt is due (0 when it is)."""
        return max(0.0, self._next - time.monotonic())

    def reset(self) -> None:
        """Record a success: the next failure starts again at ``initial``."""
        self.delay = 0.0
        self.failures = 0
        self._next = 0.0


def connect_redis(
    url: str,
    *,
    password: str | None = None,
    connect_timeout: float = 2.0,
    command_timeout: float = 5.0,
    cluster: bool | None = None,
) -> RedisClient:
    """A connected redis-py client for ``url``, a ``RedisCluster`` on a cluster.

    URL forms: ``redis://`` and ``rediss://`` (TLS; ``?ssl_cert_reqs=``,
    ``?ssl_ca_certs=`` as redis-py reads them), ``user:password@`` (ACL), ``/DB``;
    ``password`` is used when the URL has none. Cluster mode is taken from the
    ``cluster=yes|no`` URL option or ``cluster``, else detected with ``INFO cluster``.
    redis-py's own retries are off: the bus decides when to retry, so a command is
    never silently sent twice. Raises ``redis.RedisError`` when Redis does not answer.
    """
    import redis
    from redis.backoff import NoBackoff
    from redis.cluster import RedisCluster
    from redis.retry import Retry

    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    forced = [v for k, v in query if k == "cluster"]
    if forced:
        cluster = forced[-1].lower() in ("1", "yes", "true", "on")
        parts = parts._replace(query=urlencode([(k, v) for k, v in query if k != "cluster"]))
    check_redis_url(url)
    options: dict[str, Any] = {
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": command_timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    if password is not None:
        options["password"] = password  # the URL's own password wins (redis-py rule)
    if cluster is None:
        probe = redis.Redis.from_url(urlunsplit(parts), **options)
        try:
            cluster = _cluster_enabled(probe)
            if not cluster:
                return probe
        except BaseException:
            probe.close()
            raise
        probe.close()
    if not cluster:
        client: RedisClient = redis.Redis.from_url(urlunsplit(parts), **options)
        client.ping()
        return client
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError("a Redis Cluster has only database 0; drop the /DB of the URL")
    return RedisCluster.from_url(urlunsplit(parts._replace(path="")), **options)


def check_redis_url(url: str) -> None:
    """Raise ``ValueError`` when redis-py cannot use ``url`` (scheme, port, database,
    an unknown or malformed query option such as ``ssl_cert_reqs=bogus``), without
    connecting. The message never quotes the URL's password.

    redis-py itself checks some of this only on the first command (where it looks
    like an outage) and ignores a database path that is not a number.
    """
    import redis
    from redis.exceptions import RedisError

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "cluster"]  # ours
    try:
        database = unquote(parts.path).strip("/")
        if parts.scheme in ("redis", "rediss") and database and not database.isdigit():
            raise ValueError(f"the database {database!r} is not a number")
        pool = redis.ConnectionPool.from_url(urlunsplit(parts._replace(query=urlencode(query))))
        pool.connection_class(**pool.connection_kwargs)  # builds it; connects later
    except (ValueError, TypeError, RedisError) as exc:
        message = str(exc)
        for secret in {parts.password, unquote(parts.password or "")} - {None, ""}:
            message = message.replace(str(secret), "***")
        raise ValueError(message) from None


def pool_connection(client: Redis) -> Any:
    """A connection taken from ``client``'s pool, kept by the caller.

    redis-py before 5.3 requires a command name here; later versions deprecate it.
    """
    import inspect

    get = client.connection_pool.get_connection
    name = inspect.signature(get).parameters.get("command_name")
    if name is not None and name.default is inspect.Parameter.empty:
        return get("PING")
    return get()


def _cluster_enabled(client: Redis) -> bool:
    """Whether the server runs in cluster mode (False when INFO is not allowed)."""
    from redis.exceptions import NoPermissionError

    try:
        info = client.info("cluster")
    except NoPermissionError:
        client.ping()  # an ACL user without INFO: still prove the connection works
        return False
    return bool(info.get("cluster_enabled"))


def entry_messages(entries: Any) -> list[tuple[str, bytes | None]]:
    """``(entry id, msg field)`` of redis-py stream entries (XRANGE, XREAD items)."""
    out: list[tuple[str, bytes | None]] = []
    for entry_id, fields in entries or ():
        raw = (fields or {}).get(MESSAGE_FIELD.encode())
        eid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        out.append((eid, raw if isinstance(raw, bytes) else None))
    return out


def is_redis_error(exc: BaseException) -> bool:
    """Whether ``exc`` means "Redis cannot take this now" (spool, retry later)."""
    from redis.exceptions import RedisError

    return isinstance(exc, (RedisError, OSError))
