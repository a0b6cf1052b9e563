"""TLS for clients, workers and admin clients, with certificates the test makes (trustme).

The server runs with ``--ssl-certificate/--ssl-key``; in the second case also
with ``--ssl-ca-file``, which makes it require a client certificate signed by
the test's CA.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from gearman_proto.adapters._common import GearmanError

from gearman_proto.admin import StatusRow

if TYPE_CHECKING:
    from conftest import GM, Certs, ServerProcess

Fn = Callable[[str], str]


@pytest.mark.parametrize("client_cert", [False, True], ids=["server-cert", "client-cert"])
def test_tls_client_worker_and_admin(gm: GM, our_server_factory: Callable[..., ServerProcess],
                                     certs: Certs, fn: Fn, client_cert: bool) -> None:
    server = our_server_factory(extra=certs.server_args(require_client_cert=client_cert))
    context = certs.client_context(with_cert=client_cert)
    gm.tls[server.address] = context
    f = fn("tls")
    worker = gm.worker(server, ssl=context, client_id="tls-worker")
    worker.register(f, lambda job: bytes(job.data[::-1]))
    worker.start()
    client = gm.client(server, ssl=context)
    assert client.do(f, "Hello world!") == b"!dlrow olleH"
    assert client.echo("over TLS") == b"over TLS"
    admin = gm.admin(server, ssl=context)
    assert StatusRow(f.encode(), 0, 0, 1) in admin.status()
    assert any(row.client_id == b"tls-worker" for row in admin.workers())

    # Who cannot get in: a client that does not trust the server's CA, one that
    # speaks plain TCP, and (when one is required) one without a certificate.
    strangers = [ssl.create_default_context(), None]
    if client_cert:
        strangers.append(certs.client_context(with_cert=False))
    for stranger in strangers:
        other = gm.client(server, ssl=stranger, connect_timeout=5, created_timeout=5)
        with pytest.raises(GearmanError):
            other.do(f, "let me in")
