"""The docs' tables that cite tests: each row's words here, its tests by their markers.

A test joins a row with one decorator line, ``@pytest.mark.feature("TABLE.ROW")``,
naming the row's id below and, in a table with several columns and no rule of its
own for them, the column(s) it belongs in: ``@pytest.mark.feature("tools.fail",
"perl-client")``.  ``python -m tools.gen_docs`` collects the tests and writes each
table into its page between ``<!-- BEGIN gen_docs NAME -->`` and
``<!-- END gen_docs NAME -->``; ``tests/test_docs.py`` fails when a page is out of
date, when a marker names a row that does not exist, or when a row has no test.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

Params = Mapping[str, str]
"""A collected test's parameters (``item.callspec.params``), each value as ``str()``."""


@dataclass(frozen=True)
class Matrix:
    """A table of features by columns whose cells list the tests showing the feature.

    ``column_of`` picks the column of a test that names none in its marker (or
    returns None to leave that parametrisation out of the table).
    """

    name: str
    page: str
    corner: str
    columns: Mapping[str, str]  # column key -> its header
    rows: Mapping[str, str]  # row id -> the feature in words
    column_of: Callable[[Params], str | None] | None = None
    notes: Mapping[tuple[str, str], str] = field(default_factory=dict)  # (row, column) -> note


@dataclass(frozen=True)
class Commands:
    """A table of figures whose last column is the command that measures them.

    Each row is ``(what, figure, command)``; ``{tests}`` in the command becomes the
    tests marked with the row's id, so a renamed test renames the command too.  A
    command without ``{tests}`` is run by hand (a long run outside the suite).
    """

    name: str
    page: str
    header: tuple[str, str, str]
    rows: Mapping[str, tuple[str, str, str]]
    notes: Mapping[str, str] = field(default_factory=dict)  # row -> words after the command


Table = Matrix | Commands


def _flavour(params: Params) -> str | None:
    """The adapter a parametrised test runs: ``kit`` in tests/interop, the anyio backend
    in tests/test_anyio_adapter.py (whose trio backend is the trio adapter)."""
    if "kit" in params:
        return params["kit"]
    if params.get("target") == "gearmand":
        return {"asyncio": "anyio", "trio": "trio"}.get(params.get("anyio_backend", ""))
    return None  # against our own server: not this table's subject


ADAPTERS = Matrix(
    name="interop-adapters",
    page="interoperability.md",
    corner="feature",
    columns={"sync": "sync", "asyncio": "asyncio", "anyio": "anyio", "trio": "trio"},
    column_of=_flavour,
    rows={
        "every-priority": "foreground and background jobs at every priority",
        "priority-order": "priority order of queued jobs",
        "coalescing": "unique coalescing (two clients, one run, both get the result)",
        "dash-unique": "unique `-` (the data is the key)",
        "streaming": "WORK_DATA / WORK_WARNING / WORK_STATUS streaming",
        "work-fail": "WORK_FAIL",
        "work-exception": "WORK_EXCEPTION with and without the exceptions option",
        "get-status": "GET_STATUS / GET_STATUS_UNIQUE, running and finished",
        "echo": "ECHO",
        "client-id": "SET_CLIENT_ID (client and worker, seen in `workers`)",
        "can-do-timeout": "CAN_DO_TIMEOUT expiry: gearmand requeues, another worker runs it",
        "epoch": "SUBMIT_JOB_EPOCH held until its time",
        "reduce": "reduce submission (fg and bg) accepted and run",
        "pre-sleep": "worker PRE_SLEEP / NOOP cycle, packet by packet on the wire",
        "admin-replies": "AdminClient parses every admin reply (status, prioritystatus, "
                         "workers, show jobs, show unique jobs, cancel job, create/drop "
                         "function and their ERRs, maxqueue 0/1/3 limits, getpid, version, "
                         "verbose, an unknown command)",
    },
    notes={("get-status", "asyncio"): "(queued too)"},
)

TOOLS = Matrix(
    name="interop-tools",
    page="interoperability.md",
    corner="feature",
    columns={"client": "`gearman` client", "worker": "`gearman -w` worker",
             "gearadmin": "`gearadmin`", "perl-client": "Perl Gearman::Client",
             "perl-worker": "Perl Gearman::Worker"},
    rows={
        "foreground": "foreground job",
        "arguments": "data from arguments, `-s`",
        "background": "background job (`-b`)",
        "priorities": "priorities (`-I`, `-L`)",
        "unique": "unique id (`-u`), coalescing",
        "line-mode": "line mode (`-n`, `-N`, `-P`)",
        "no-command": "worker with no command, `-c`",
        "status": "status updates",
        "fail": "failure (WORK_FAIL)",
        "exception": "exception to a client without the option",
        "perl-both": "Perl client ↔ Perl worker through the server",
        "listings": "`--status`, `--priority-status`, `--workers`, `--show-jobs`, "
                    "`--show-unique-jobs`, `--getpid`, `--server-verbose`, several at once: "
                    "output equal to gearmand's",
        "version": "`--server-version`",
        "functions": "`--create-function`, `--drop-function` (and their errors)",
        "cancel": "`--cancel-job` (and an unknown job)",
        "flags": "`-S`, `--help`, no flag",
    },
)

DIFFERENTIAL = Matrix(
    name="interop-differential",
    page="interoperability.md",
    corner="scenario",
    columns={"test": "test"},
    rows={
        "coalescing": "unique coalescing: foreground and background submitters, updates to "
                      "every client, unique `-`",
        "requeue": "requeue of a lost job after a worker disconnect, CANT_DO, CAN_DO_TIMEOUT "
                   "(status reset, retries + 1, sleeper woken, the first worker's late result "
                   "refused)",
        "who-reports": "WORK_* from a worker that does not hold the job, one connection "
                       "attached twice to a job, PRE_SLEEP with work queued, a 200-byte "
                       "client id",
        "maxqueue-full": "maxqueue full, both forms, coalesced submission never refused, reset",
        "cancel": "cancel job (queued), unknown job",
        "errors": "ERROR answers (OPTION_REQ, SUBMIT_JOB_SCHED, ALL_YOURS, 65-byte unique, "
                  "WORK_* for unknown jobs), GRAB_JOB_ALL with and without reducer",
        "job-retries": "`--job-retries`",
        "admin-lines": "forty-odd admin lines: case, runs of spaces, extra words, missing or "
                       "wrong arguments, byte for byte",
        "priority": "priority order across functions",
    },
    notes={("priority", "test"): "(a [difference](differences.md))"},
)

DIFFERENCES = Matrix(
    name="differences",
    page="differences.md",
    corner="difference",
    columns={"test": "test"},
    rows={
        "priority": "Priority is global across a worker's functions; gearmand takes its "
                    "newest registered function that has any job, so a LOW job can beat "
                    "another function's HIGH one.",
        "epoch-timer": "SUBMIT_JOB_EPOCH jobs wake sleeping workers when they come due; "
                       "gearmand has no timer (its issue #101): it NOOPs sleepers at "
                       "submission and never when due.",
        "can-do-timeout-timer": "One CAN_DO_TIMEOUT timer per job, not cancelled by "
                                "PRE_SLEEP; gearmand's per-connection timer is cancelled by "
                                "PRE_SLEEP.",
        "cancel-queued": "A cancelled queued job leaves at once (not counted by `status`, not "
                         "in `show jobs`, a second cancel is `ERR UNKNOWN_JOB`); gearmand "
                         "keeps it flagged until a worker reaches it.",
        "client-left": "A queued foreground job whose clients all left is gone at once, so "
                       "the same unique submitted again runs; gearmand attaches the new "
                       "submitter to the doomed job, which never answers.",
        "cancel-running": "`cancel job` on a running job: the worker's later WORK_* get ERROR "
                          "JOB_NOT_FOUND; gearmand answers nothing, forwards WORK_STATUS to "
                          "the client it already failed, drops the rest.",
        "drop-function": "`drop function` with queued jobs fails them (WORK_FAIL to their "
                         "clients); gearmand answers OK and orphans them.",
        "can-do-twice": "CAN_DO twice is one registration; gearmand lists the function twice "
                        "and counts the worker twice.",
        "can-do-wakes": "CAN_DO for a function with waiting work wakes a sleeping worker; "
                        "gearmand leaves it asleep.",
        "unique-64": "A 64-byte unique is kept whole and coalesces; gearmand truncates it to "
                     "63 bytes, never coalesces it and sends it to the worker with a NUL "
                     "inside.",
        "status-unique-dash": "`GET_STATUS_UNIQUE -` never finds jobs submitted with unique "
                              "`-`; gearmand finds one whose data hashes like `-`.",
        "exception-as-fail": "A WORK_EXCEPTION forwarded as WORK_FAIL (client without the "
                             "exceptions option) carries the bare handle; gearmand includes "
                             "the handle's NUL, which libgearman does not match, so the "
                             "`gearman` tool waits until its timeout.",
        "store-keys": "Store rows have their own keys, so background jobs sharing (unique, "
                      "function) all survive a restart; gearmand's sqlite rows collapse them "
                      "(its issue #80).",
        "job-retries": "`--job-retries N` counts requeues; gearmand's counts runs, so its "
                       "`-j 2` is our `-j 1`.",
        "maxqueue-limits": "`maxqueue FN` with four or more limits answers "
                           "`ERR INVALID_ARGUMENTS`; gearmand closes the connection.",
        "malformed": "A malformed packet (bad magic or type, a response packet sent to the "
                     "server, too few arguments, a non-decimal number) gets an ERROR packet "
                     "with gearmand's code, then the connection is closed.  gearmand answers "
                     "a RES magic or a response packet with ERROR and carries on, closes "
                     "without a word on a bad magic, type or argument count, and reads "
                     "numbers with `atoi`.",
        "listing-order": "`workers`, `status`, `show jobs` list in creation order, not hash "
                         "order (gearmand's order is undefined; the gearadmin comparison "
                         "sorts).",
        "version": "`version` answers `gearman-proto <version>`.",
    },
)

RELIABILITY = Commands(
    name="reliability-figures",
    page="reliability.md",
    header=("what", "figure", "command"),
    rows={
        "sigkill": (
            "workers SIGKILLed mid-job, CI size",
            "2,000 jobs per server (asyncio, trio), three runs each: 27-89 kills per run "
            "(19-47 of them mid-job), up to 55 jobs run twice; **0 completed twice, 0 lost**",
            "python -m pytest {tests} -s"),
        "sigkill-long": (
            "same, long",
            "asyncio: 20,000 jobs, 303 kills (237 mid-job), 20,248 runs, 247 jobs run twice; "
            "trio: 20,000 jobs, 542 kills (354 mid-job), 20,377 runs, 368 run twice; "
            "**0 completed twice, 0 lost**",
            "GEARMAN_KILL_JOBS=20000 python -m pytest {tests} -s"),
        "durable": (
            "durable server SIGKILLed under load",
            "5 kill/restart cycles on one SQLite file per run; three runs: 1,547 / 6,673 / "
            "6,952 acknowledged background jobs, 6-9 run twice; **0 lost**",
            "python -m pytest {tests} -s"),
        "vanishing": (
            "client vanishing (FIN, and RST), 3 running + 5 queued foreground jobs",
            "`status` and `show jobs` back to 0, only the worker left in `workers`",
            "python -m pytest {tests}"),
        "half-dead": (
            "a worker's network dies under it (two network namespaces, veth link set down; "
            "root only)",
            "with `--keepalive-idle 1 --keepalive-interval 1 --keepalive-count 2`: dropped "
            "and its job run by another worker **3.0 s** after the cut; without keepalive the "
            "job stays stuck",
            "python -m pytest {tests} -s"),
        "keepalive": (
            "keepalive timings, idle timeout",
            "read back from the kernel (`/proc/net/tcp`, `getsockopt`) on server and client "
            "sockets; the idle timeout closes only silent connections that run, await and "
            "sleep on nothing",
            "python -m pytest {tests}"),
        "bad-input": (
            "bad input against the running server",
            "44 cases × 2 servers, each its documented answer, while a foreground job "  # noqa: RUF001
            "streamed WORK_DATA beside them throughout",
            "python -m pytest {tests} -s"),
        "hypothesis": (
            "hypothesis, every test run",
            "300 byte streams into the Decoder, 300 into ServerConnection, 300 hub scripts "
            "(2,000-2,300 steps) per run",
            "python -m pytest {tests} -s"),
        "atheris": (
            "atheris",
            "hub: 332,601 inputs in 600 s; decoder: 255,449 in 151 s; server connection: "
            "182,105 in 151 s; no failure after the fix below",
            "python fuzz/fuzz.py hub -max_total_time=600 corpus-hub"),
        "never-reads": (
            "a client that submits and never reads",
            "`--output-limit 65536 --max-client-jobs 1000`: it pushed 5.7 MB and stalled; "
            "server peak RSS grew 9.1-9.5 MB (asyncio) / 10.1-10.6 MB (trio) against a bound "
            "of 19.5 MB computed from the limits",
            "python -m pytest {tests} -s"),
        "idle-5000": (
            "idle connections held",
            "**5,000** concurrent idle connections per server; 200 jobs served meanwhile in "
            "0.09-0.20 s (asyncio) / 0.14-0.18 s (trio)",
            "python -m pytest {tests} -s"),
        "short-soak": (
            "short soak (in CI)",
            "15 s of steady load (17,000-31,000 jobs) plus 9,000-15,000 connections coming "
            "and going (echo, jobs, background jobs, admin, resets, half packets, garbage): "
            "asyncio RSS 27.6 → 27.6 MB, fds 10 → 10; trio RSS 33.7 → 34.5-35.2 MB, "
            "fds 12 → 12",
            "python -m pytest {tests} -s"),
        "long-soak": (
            "long soak",
            "300 s: asyncio 212,000 connections churned and 416,910 steady jobs, RSS 27.6 → "
            "27.7 MB, fds 11 → 11; trio 100,000 connections, 190,880 jobs, RSS 33.4 → "
            "34.7 MB, fds 13 → 13",
            "GEARMAN_SOAK_SECONDS=300 python -m pytest {tests} -s"),
    },
    notes={"hypothesis": "(`GEARMAN_FUZZ_EXAMPLES=N` for more)",
           "atheris": "(and `decoder`, `server`)"},
)

TABLES: dict[str, Table] = {
    "adapters": ADAPTERS,
    "tools": TOOLS,
    "differential": DIFFERENTIAL,
    "differences": DIFFERENCES,
    "reliability": RELIABILITY,
}
"""Each table by the prefix of its row ids: ``adapters.echo`` is ADAPTERS' row ``echo``."""
