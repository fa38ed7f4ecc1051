"""Direct ingress: the job's own requests go straight to the ingress replicas' HTTP servers, not through Serve's
proxy.

Ray Serve 2.60's direct ingress (``RAY_SERVE_ENABLE_DIRECT_INGRESS=1``) starts an HTTP server in every ingress
replica, on the Serve host (``serve.host``, 127.0.0.1 by default) and a port of its own from a range; Serve's
proxy keeps the app's port for everyone else. A request that reaches a replica's own port skips the proxy's hop
(its actor call and its event loop): 1.7 against 7.7 ms p50 for one row here, against 1.0 ms for a plain
FastAPI server (``benchmarks/serve_vs_plain.py``). It is the same FastAPI app, so the same versions, ``?min_version``, auth
token, body limit and health checks apply.

The main job lists the replicas' ports with :func:`replica_urls` (what Serve's controller tells its own HAProxy
manager: :class:`ray.serve.schema.TargetGroup`) and its :class:`~ddn_ray.client.TrafficClient` spreads each
window's requests over them; a refused connection (a replica gone) is sent again through the proxy, and the list
is read again.

The flags are read by Serve's processes when they start, so :func:`enable` must run before ``ray.init`` starts a
local cluster (the main job's ``start_ray`` and the test session do it); a cluster started without them serves
through the proxy only, and :func:`replica_urls` then returns no URL.
"""

from __future__ import annotations

import os

import ray
from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

__all__ = ["DIRECT_INGRESS", "enable", "replica_urls"]

DIRECT_INGRESS = "RAY_SERVE_ENABLE_DIRECT_INGRESS"


def enable(*, ports: tuple[int, int], draining_s: float = 0.0) -> None:
    """Turn on Serve's direct ingress for the local cluster this process is about to start.

    Each variable is set only where the environment does not set it already.

    Args:
        ports: the replicas' HTTP ports, ``(first, last)`` inclusive; keep the range out of Ray's worker ports
            (``--min-worker-port`` .. ``--max-worker-port``, 10002-19999 by default).
        draining_s: how long a stopping replica keeps accepting new connections (Ray's default is 30 s, for a
            load balancer to deregister it). Our client sends a refused request again through the proxy, so
            the job does not wait: 0 s by default, and ``serve.delete`` takes no longer than through the proxy.

    Raises:
        ValueError: an empty port range.
    """
    first, last = ports
    if not 0 < first <= last < 65536:
        raise ValueError(f"serve.direct_ingress_ports: {ports!r} is not a port range (first <= last)")
    os.environ.setdefault(DIRECT_INGRESS, "1")
    os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT", str(first))
    os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT", str(last + 1))  # Ray's bound is exclusive
    os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", str(draining_s))


def replica_urls(app_name: str, *, host: str, timeout_s: float = 10.0) -> list[str]:
    """The base URLs (``http://host:port``) of ``app_name``'s running ingress replicas that this process can
    reach, from Serve's controller; none when direct ingress is off (Serve then lists its proxies).

    A replica listens on ``host`` of its own node: with a loopback ``host`` only the replicas of this node
    are reachable (the others are left out); with another host each replica is reached at its node's address.

    Args:
        app_name: the Serve application.
        host: ``serve.host``, the address the replicas bind.
        timeout_s: how long to wait for Serve's controller, seconds.

    Raises:
        ray.exceptions.GetTimeoutError: Serve's controller did not answer in ``timeout_s``.
        ValueError: Serve is not running on this cluster (no controller).
    """
    controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    groups = ray.get(controller.get_target_groups.remote(), timeout=timeout_s)  # every app's (one unknown raises)
    here = ray.util.get_node_ip_address()
    loopback = host in ("127.0.0.1", "localhost")
    urls = []
    for group in groups:
        # the proxies' group has no ingress deployment: direct ingress is off, or the app has no replica running
        if group.protocol != "HTTP" or group.app_name != app_name or not group.ingress_deployment_name:
            continue
        for target in group.targets:
            if loopback and target.ip not in (here, "127.0.0.1"):
                continue  # bound to its own node's loopback
            urls.append(f"http://{host if loopback else target.ip}:{target.port}")
    return urls
