"""Bindings of the sans-IO core to real transports (installed as ``gearman_proto.adapters``)."""
