"""Reverse client on blocking sockets: ``python reverse_client.py [host:port]``."""

import sys

from gearman_proto.adapters.sync import Client

server = sys.argv[1] if len(sys.argv) > 1 else "localhost:4730"
with Client(server) as client:
    result = client.do("reverse", "Hello world!")  # submit, wait, return the result
    print(result.decode())
