"""Durable background throughput: our stores beside in-memory and beside gearmand's queues.

The ``bg`` scenario of ``benchmarks.e2e`` (4 clients pipelining SUBMIT_JOB_BG,
2 workers; jobs/s up to the last WORK_COMPLETE), each job with a unique id of
its own (gearmand's PostgreSQL queue refuses every empty-unique job but the
first: its table is keyed by (unique, function)), on:

* ``memory``           our server (uvloop), nothing stored: the reference;
* ``sqlite``, ``postgresql``, ``redis``
                       our server (uvloop) on that store, writes on the store's
                       thread (what ``gearman-proto server`` does);
* ``...:inline``       the same with the writes on the event loop (the other choice);
* ``gearmand``, ``gearmand+libsqlite3``, ``gearmand+libpq``, ``gearmand+redis``
                       gearmand --threads=1 in memory and on its queue plugins.

PostgreSQL and Redis are started by the benchmark (as the tests start them:
``tests/stores/_dbs.py``), on free loopback ports in temporary directories;
Redis with ``appendfsync always``, PostgreSQL with its defaults
(``synchronous_commit=on``), so every store fsyncs before it acknowledges.
Each measurement gets a fresh server and a fresh queue name (or table, or key
prefix).  Besides jobs/s, our servers report their store writes: **jobs per
write** is the group-commit figure, which does not depend on timing.

    python -m benchmarks.stores                  # 20k jobs, 3 runs, every kind
    python -m benchmarks.stores --smoke          # 300 jobs, 1 run
    python -m benchmarks.stores --kinds memory,postgresql,gearmand+libpq --runs 5
    python -m benchmarks.stores --write-latency  # one store write, 1 and 32 jobs, per store

``--write-latency`` times :meth:`JobStore.write` itself (median of 200, one
connection, no job server): the time a write on the event loop would stop it.
``--write-loop STORE --batches N`` writes N batches of 100 adds and the previous
batch's 100 removes, for a deterministic figure per job under cachegrind or
strace (run it with two values of N and take the difference)::

    valgrind --tool=cachegrind python -m benchmarks.stores --write-loop redis --batches 25
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from benchmarks._util import (
    ROOT,
    Server,
    available,
    gearmand_binary,
    machine,
    median,
    workdir,
    write_json,
)
from benchmarks.e2e import measure

sys.path.insert(0, str(ROOT / "tests" / "stores"))
from _dbs import PostgreSQL, Redis, free_port, pg_bindir, tempdir

KINDS = ("memory", "sqlite", "sqlite:inline", "postgresql", "postgresql:inline", "redis",
         "redis:inline", "gearmand", "gearmand+libsqlite3", "gearmand+libpq", "gearmand+redis")
PG_PASSWORD = "gearman-secret"


class Databases:
    """The PostgreSQL and Redis servers the stores run on, started when first needed."""

    def __init__(self) -> None:
        self.pg: PostgreSQL | None = None
        self.redis: Redis | None = None

    def postgresql(self) -> PostgreSQL:
        if self.pg is None:
            self.pg = PostgreSQL(tempdir("gp-bench-pg-"), free_port(), pg_bindir())
            self.pg.start()
        return self.pg

    def redis_server(self) -> Redis:
        if self.redis is None:
            self.redis = Redis(tempdir("gp-bench-redis-"), free_port(), "/usr/bin/redis-server")
            self.redis.start()
        return self.redis

    def stop(self) -> None:
        for server in (self.pg, self.redis):
            if server is not None:
                server.stop()


class StoreServer(Server):
    """A job server of one of :data:`KINDS`, on the benchmark's databases."""

    def __init__(self, kind: str, wd: Path, dbs: Databases) -> None:
        super().__init__(kind, wd)
        self.dbs = dbs

    def command(self) -> list[str]:
        port = str(self.port)
        if self.kind == "memory":
            return [*_ours("uvloop", port, self.log)]
        if self.kind.startswith("gearmand"):
            binary = gearmand_binary()
            assert binary is not None
            cmd = [binary, "--listen=127.0.0.1", f"--port={port}", "--threads=1",
                   "--verbose=ERROR", "-l", str(self.log),
                   "--pid-file", str(self.workdir / f"gearmand-{port}.pid")]
            plugin = self.kind.partition("+")[2]
            if plugin == "libsqlite3":
                cmd += ["-q", "libsqlite3", "--libsqlite3-db", str(self.workdir / f"g{port}.db")]
            elif plugin == "libpq":
                pg = self.dbs.postgresql()
                cmd += ["-q", "Postgres", "--libpq-table", f"queue_{port}", "--libpq-conninfo",
                        f"host=127.0.0.1 port={pg.port} user=postgres password={PG_PASSWORD} "
                        "dbname=postgres"]
            elif plugin == "redis":
                cmd += ["-q", "redis", "--redis-server", "127.0.0.1", "--redis-port",
                        str(self.dbs.redis_server().port), "--redis-prefix", f"g{port}"]
            return cmd
        store, _, mode = self.kind.partition(":")
        if store == "sqlite":
            queue = f"sqlite:{self.workdir / f'q{port}.db'}"
        elif store == "postgresql":
            queue = self.dbs.postgresql().url()
        else:
            queue = self.dbs.redis_server().url()
        return [sys.executable, "-m", "benchmarks._store_server", port, queue, "uvloop",
                mode or "default"]

    def start(self, timeout: float = 60.0) -> Server:
        """As :meth:`Server.start`, with time for a store's connect and replay."""
        return super().start(timeout)

    def writes(self) -> int | None:
        """The store writes our server reported at its stop, if it is ours."""
        found = re.findall(r"^writes (\d+)$", self.log.read_text(errors="replace"), re.M)
        return int(found[-1]) if found else None


def _made(made: list[StoreServer], kind: str, wd: Path, dbs: Databases) -> Server:
    server = StoreServer(kind, wd, dbs)
    made.append(server)
    return server


def _ours(loop: str, port: str, log: Path) -> list[str]:
    return [sys.executable, "-m", "gearman_proto.adapters.cli", "server", "--listen",
            "127.0.0.1", "--port", port, "--loop", loop, "--verbose", "ERROR",
            "--log-file", str(log)]


def write_latency(dbs: Databases, writes: int = 200) -> dict[str, dict[int, float]]:
    """Median seconds per ``write`` of a batch of 1 and of 32 jobs, on each store."""
    import statistics
    import time

    from gearman_proto.adapters.stores import open_store

    from gearman_proto.store import StoreBatch, StoredJob

    job = StoredJob(b"bench", b"", b"x" * 100)
    specs = {"sqlite": f"sqlite:{tempdir('gp-bench-sq-') / 'q.db'}",
             "postgresql": dbs.postgresql().url(), "redis": dbs.redis_server().url()}
    out: dict[str, dict[int, float]] = {}
    for kind, spec in specs.items():
        store = open_store(spec, name="latency")
        assert store is not None
        key, previous = 1, []
        out[kind] = {}
        try:
            for size in (1, 32):
                times = []
                for _ in range(writes):
                    adds = [(key + i, job) for i in range(size)]
                    key += size
                    t = time.perf_counter()
                    store.write(StoreBatch(adds, previous))  # the last batch's jobs end
                    times.append(time.perf_counter() - t)
                    previous = [k for k, _ in adds]
                out[kind][size] = statistics.median(times)
        finally:
            store.close()  # type: ignore[attr-defined]
    return out


def write_loop(dbs: Databases, kind: str, batches: int) -> None:
    """Write ``batches`` batches of 100 adds (and the last batch's removes) to a fresh name."""
    import uuid

    from gearman_proto.adapters.stores import open_store

    from gearman_proto.store import StoreBatch, StoredJob

    spec = {"sqlite": lambda: f"sqlite:{tempdir('gp-bench-sq-') / 'q.db'}",
            "postgresql": lambda: dbs.postgresql().url(),
            "redis": lambda: dbs.redis_server().url()}[kind]()
    store = open_store(spec, name=f"loop{uuid.uuid4().hex[:8]}")
    assert store is not None
    key, previous = 1, []
    try:
        for _ in range(batches):
            adds = [(key + i, StoredJob(b"bench", b"u%d" % (key + i), b"x" * 100))
                    for i in range(100)]
            key += 100
            store.write(StoreBatch(adds, previous))
            previous = [k for k, _ in adds]
    finally:
        store.close()  # type: ignore[attr-defined]


PEERS = {"sqlite": "gearmand+libsqlite3", "postgresql": "gearmand+libpq",
         "redis": "gearmand+redis"}


def markdown(table: dict[str, dict[str, float | None]]) -> str:
    """The medians as a table: done and acknowledged jobs/s, ratios, jobs per write."""
    def ratio(a: float | None, b: float | None, digits: int) -> str:
        return f"{a / b:.{digits}f}" if a and b else "-"
    memory = table.get("memory", {})
    lines = ["| server | jobs/s done | x our in-memory | acknowledged/s | x gearmand's same "
             "store (acknowledged) | jobs per write | runs at the time bound |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for kind, cell in table.items():
        peer = table.get(PEERS.get(kind.partition(":")[0], ""), {})
        per_write = cell["jobs_per_write"]
        lines.append(
            f"| {kind} | {cell['jobs_per_s'] or 0:,.0f} | "
            f"{ratio(cell['jobs_per_s'], memory.get('jobs_per_s'), 2)} | "
            f"{cell['acked_per_s'] or 0:,.0f} | "
            f"{ratio(cell['acked_per_s'], peer.get('acked_per_s'), 1)} | "
            f"{f'{per_write:.1f}' if per_write else '-'} | {int(cell['timed_out'] or 0)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--max-seconds", type=float, default=30.0)
    p.add_argument("--warmup", type=int, default=1000)
    p.add_argument("--window", type=int, default=1000)
    p.add_argument("--smoke", action="store_true", help="300 jobs, 1 run: does it work?")
    p.add_argument("--json", help="write every measurement and the summary here")
    p.add_argument("--write-latency", action="store_true",
                   help="time one store write per store instead (no job server)")
    p.add_argument("--write-loop", choices=("sqlite", "postgresql", "redis"),
                   help="write --batches batches of 100 jobs to this store, nothing else")
    p.add_argument("--batches", type=int, default=25)
    ns = p.parse_args(argv)
    if ns.write_loop:
        dbs = Databases()
        try:
            write_loop(dbs, ns.write_loop, ns.batches)
        finally:
            dbs.stop()
        return 0
    if ns.write_latency:
        dbs = Databases()
        try:
            latency = write_latency(dbs)
        finally:
            dbs.stop()
        print("| store | one write, 1 job | one write, 32 jobs |")
        print("|---|---:|---:|")
        for kind, cell in latency.items():
            print(f"| {kind} | {cell[1] * 1e3:.2f} ms | {cell[32] * 1e3:.2f} ms |")
        write_json(ns.json, {"machine": machine(), "write_latency_s": latency})
        return 0
    if ns.smoke:
        ns.jobs, ns.runs, ns.warmup, ns.max_seconds = 300, 1, 50, 20.0
    kinds = [k for k in ns.kinds.split(",") if k]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        p.error(f"unknown kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    kinds = [k for k in kinds if not k.startswith("gearmand") or available("gearmand")]
    dbs = Databases()
    wd = workdir("stores")
    rows: list[dict[str, Any]] = []
    try:
        for run in range(ns.runs):
            order = kinds[run % len(kinds):] + kinds[:run % len(kinds)]
            for kind in order:
                made: list[StoreServer] = []
                row = measure(kind, "bg", ns.jobs, window=ns.window, inflight=16,
                              max_seconds=ns.max_seconds, warmup=ns.warmup, workers=2,
                              clients=4, payload=100, wd=wd,
                              make_server=lambda k, d, made=made: _made(made, k, d, dbs),
                              client_args=("--unique",))
                writes = made[0].writes()
                row["writes"] = writes
                row["jobs_per_write"] = ((ns.jobs + ns.warmup) / writes) if writes else None
                rows.append(row)
                print(f"run {run + 1} {kind:>20}: {row['jobs_per_s']:>9,.0f} jobs/s"
                      + (f", {row['jobs_per_write']:.1f} jobs per store write"
                         if row["jobs_per_write"] else "")
                      + (" (hit the time bound)" if row["timed_out"] else ""), flush=True)
    finally:
        dbs.stop()
    table: dict[str, dict[str, float | None]] = {}
    for k in kinds:
        mine = [r for r in rows if r["server"] == k]
        per_write = [r["jobs_per_write"] for r in mine if r["jobs_per_write"]]
        table[k] = {"jobs_per_s": median(r["jobs_per_s"] for r in mine),
                    "acked_per_s": median(r["acked_per_s"] for r in mine),
                    "timed_out": sum(bool(r["timed_out"]) for r in mine),
                    "jobs_per_write": median(per_write) if per_write else None}
    print()
    print(markdown(table))
    write_json(ns.json, {"machine": machine(), "rows": rows, "summary": table,
                         "jobs": ns.jobs, "runs": ns.runs})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
