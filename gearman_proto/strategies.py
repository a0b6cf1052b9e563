"""Hypothesis strategies for the Gearman protocol: events, conversations, malformed bytes.

For property tests of anything that speaks Gearman (this library, a server or
client of your own) and for the network fuzzer (``gearman-proto fuzz``, see
``docs/fuzzing.md``).  Hypothesis is an optional dependency::

    pip install 'gearman-proto[fuzz]'

and only this module imports it: ``import gearman_proto`` never does.  The
strategies build values and nothing else (no I/O, no clock).

Three kinds of strategy:

* **Events with valid arguments**, per sender: :func:`events` (``Role.CLIENT``,
  ``Role.WORKER`` or ``Role.SERVER``) and :func:`packets` (the same, as wire
  bytes with the sender's magic); :func:`admin_lines` for the text protocol.
* **Conversations**: :func:`client_conversations` (submissions, status
  queries, echoes, options), :func:`worker_conversations` (CAN_DO, then
  GRAB / WORK_* / PRE_SLEEP cycles) and :func:`conversations`, a script of
  steps over several connections -- clients, workers and admin peers -- that a
  server can be driven with.
* **Malformed byte streams by kind**: :func:`malformed_streams`, one kind or
  several of :data:`MALFORMED_KINDS` (bad magic, unknown types, packets of the
  wrong direction, wrong argument counts, oversized size fields, truncations,
  NULs where they cannot be framed, non-decimal numbers, bad text lines,
  garbage).

Arguments are drawn from a small shared vocabulary by default (a few
function names, unique ids and job handles), so that separate packets talk
about the same jobs; every strategy takes the vocabulary as parameters, e.g.
``handles=`` to point status queries and WORK_* packets at the handles your
server gives out (the defaults are ``H:fuzz:1`` ... ``H:fuzz:6``, what a
:class:`~gearman_proto.broker.JobServer` with ``handle_prefix=b"H:fuzz"`` names
its first six jobs).

Example, a property of the decoder::

    from hypothesis import given
    from gearman_proto import strategies as gst

    @given(gst.malformed_streams())
    def test_decoder_refuses_bad_input_cleanly(data):
        ...
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

from hypothesis import strategies as st

from .codec import event_to_packet
from .events import (
    AdminCommand,
    AllYours,
    CanDo,
    CanDoTimeout,
    CantDo,
    EchoReq,
    EchoRes,
    Error,
    Event,
    GetStatus,
    GetStatusUnique,
    GrabJob,
    GrabJobAll,
    GrabJobUniq,
    JobAssign,
    JobCreated,
    NoJob,
    Noop,
    OptionReq,
    OptionRes,
    PreSleep,
    Priority,
    ResetAbilities,
    SetClientId,
    StatusRes,
    StatusResUnique,
    SubmitJob,
    SubmitJobEpoch,
    SubmitJobSched,
    SubmitReduceJob,
    WorkComplete,
    WorkData,
    WorkException,
    WorkFail,
    WorkStatus,
    WorkWarning,
)
from .packets import _LENIENT as _LENIENT_NUMBERS
from .packets import REQ, RES, SPECS, Role, encode_packet

__all__ = [
    "FUNCTIONS",
    "UNIQUES",
    "HANDLES",
    "MALFORMED_KINDS",
    "ROLES",
    "Step",
    "functions",
    "uniques",
    "handles",
    "payloads",
    "events",
    "packets",
    "encode",
    "admin_lines",
    "admin_commands",
    "client_conversations",
    "worker_conversations",
    "conversations",
    "malformed_streams",
]

FUNCTIONS = (b"f", b"g", b"reverse")
"""The default function names: few, so that clients and workers meet."""
UNIQUES = (b"", b"u1", b"u2", b"-", b"k" * 64)
"""The default unique ids: none, two shared keys, ``-`` (the data is the key), the longest."""
HANDLES = tuple(b"H:fuzz:%d" % i for i in range(1, 7))
"""The default job handles: a JobServer's first six with ``handle_prefix=b"H:fuzz"``."""

MALFORMED_KINDS = ("bad_magic", "unknown_type", "wrong_direction", "wrong_arg_count",
                   "oversized", "truncated", "nul_in_field", "non_decimal", "bad_text",
                   "garbage")
"""The kinds of :func:`malformed_streams`, each a way a byte stream can break the framing."""

_HEADER = struct.Struct(">4sII")


def functions() -> st.SearchStrategy[bytes]:
    """Function names: mostly the shared :data:`FUNCTIONS`, sometimes any NUL-free bytes."""
    return st.sampled_from(FUNCTIONS) | st.binary(min_size=1, max_size=12).filter(
        lambda b: 0 not in b)


def uniques() -> st.SearchStrategy[bytes]:
    """Unique ids of at most 64 bytes without NUL: mostly :data:`UNIQUES`."""
    return st.sampled_from(UNIQUES) | st.binary(max_size=8).filter(lambda b: 0 not in b)


def handles() -> st.SearchStrategy[bytes]:
    """Job handles: :data:`HANDLES`."""
    return st.sampled_from(HANDLES)


def payloads() -> st.SearchStrategy[bytes]:
    """Job data and results: any bytes (NUL included: data is the last argument)."""
    return st.sampled_from([b"", b"data", b"a\0b"]) | st.binary(max_size=32)


_NUMBERS = st.integers(0, 100)
# Far enough that no test run sees them expire; short ones make results depend on timing.
_TIMEOUTS = st.sampled_from([60_000, 3_600_000])
# One in the past (due at once) and one in 2100 (never due in a run).
_EPOCHS = st.sampled_from([1, 4_102_444_800])


def events(sender: Role = Role.CLIENT, *,
           functions: st.SearchStrategy[bytes] | None = None,
           uniques: st.SearchStrategy[bytes] | None = None,
           handles: st.SearchStrategy[bytes] | None = None,
           payloads: st.SearchStrategy[bytes] | None = None) -> st.SearchStrategy[Event]:
    """Every binary event ``sender`` may send, with valid arguments.

    ``Role.CLIENT``: submissions of every kind (six priorities and
    background flags, epoch, schedule, reduce), GET_STATUS(_UNIQUE), ECHO_REQ,
    OPTION_REQ, SET_CLIENT_ID.  ``Role.WORKER``: CAN_DO(_TIMEOUT), CANT_DO,
    RESET_ABILITIES, PRE_SLEEP, the three GRABs, every WORK_* packet,
    ECHO_REQ, OPTION_REQ, SET_CLIENT_ID, ALL_YOURS.  ``Role.SERVER``: what a
    job server sends clients and workers (JOB_CREATED, NOOP, NO_JOB, the
    three JOB_ASSIGNs, forwarded WORK_*, STATUS_RES(_UNIQUE), ECHO_RES,
    OPTION_RES, ERROR).  Each one encodes without error (:func:`encode`).
    """
    fn = functions if functions is not None else _functions()
    un = uniques if uniques is not None else _uniques()
    hd = handles if handles is not None else _handles()
    pl = payloads if payloads is not None else _payloads()
    common = [st.builds(EchoReq, pl), st.just(OptionReq(b"exceptions")),
              st.builds(SetClientId, st.binary(max_size=16))]
    if sender is Role.CLIENT:
        return st.one_of(
            st.builds(SubmitJob, fn, pl, un, st.sampled_from(Priority), st.booleans()),
            st.builds(SubmitJobEpoch, fn, _EPOCHS, pl, un),
            st.builds(SubmitJobSched, fn, un, st.integers(0, 59), st.integers(0, 23),
                      st.integers(1, 31), st.integers(1, 12), st.integers(0, 6), pl),
            st.builds(SubmitReduceJob, fn, st.sampled_from([b"", b"r"]), pl, un,
                      st.booleans()),
            st.builds(GetStatus, hd), st.builds(GetStatusUnique, un), *common)
    if sender is Role.WORKER:
        return st.one_of(
            st.builds(CanDo, fn), st.builds(CanDoTimeout, fn, _TIMEOUTS),
            st.builds(CantDo, fn), st.just(ResetAbilities()), st.just(PreSleep()),
            st.sampled_from([GrabJob(), GrabJobUniq(), GrabJobAll()]), *_reports(hd, pl),
            st.just(AllYours()), *common)
    if sender is Role.SERVER:
        return st.one_of(
            st.builds(JobCreated, hd), st.just(Noop()), st.just(NoJob()),
            st.builds(JobAssign, hd, fn, pl), st.builds(JobAssign, hd, fn, pl, un),
            st.builds(JobAssign, hd, fn, pl, un, st.sampled_from([b"", b"r"])),
            *_reports(hd, pl),
            st.builds(StatusRes, hd, st.booleans(), st.booleans(), _NUMBERS, _NUMBERS),
            st.builds(StatusResUnique, un, st.booleans(), st.booleans(), _NUMBERS,
                      _NUMBERS, _NUMBERS),
            st.builds(EchoRes, pl), st.just(OptionRes(b"exceptions")),
            st.builds(Error, st.sampled_from([b"JOB_NOT_FOUND", b"INVALID_COMMAND"]),
                      st.binary(max_size=16)))
    raise ValueError(f"sender must be Role.CLIENT, WORKER or SERVER, not {sender!r}")


# The module-level strategies under other names, for the keyword defaults of events().
_functions, _uniques, _handles, _payloads = functions, uniques, handles, payloads


def _reports(hd: st.SearchStrategy[bytes], pl: st.SearchStrategy[bytes]
             ) -> list[st.SearchStrategy[Event]]:
    """WORK_* packets about a job: what a worker sends and the server forwards."""
    return [st.builds(WorkStatus, hd, _NUMBERS, _NUMBERS), st.builds(WorkData, hd, pl),
            st.builds(WorkWarning, hd, pl), st.builds(WorkComplete, hd, pl),
            st.builds(WorkFail, hd), st.builds(WorkException, hd, pl)]


def encode(event: Event, sender: Role = Role.CLIENT) -> bytes:
    """The wire bytes of ``event`` sent by ``sender`` (an admin command: its line and ``\\n``)."""
    if isinstance(event, AdminCommand):
        return event.line + b"\n"
    ptype, args = event_to_packet(event)
    return encode_packet(RES if sender is Role.SERVER else REQ, ptype, args)


def packets(sender: Role = Role.CLIENT, **vocabulary: st.SearchStrategy[bytes]
            ) -> st.SearchStrategy[bytes]:
    """One well-formed packet of :func:`events` (same arguments), as bytes."""
    return events(sender, **vocabulary).map(lambda e: encode(e, sender))


def admin_commands(*, functions: st.SearchStrategy[bytes] | None = None,
                   handles: st.SearchStrategy[bytes] | None = None,
                   shutdown: bool = False) -> st.SearchStrategy[AdminCommand]:
    """Admin commands gearmand 1.1.x knows, as :class:`AdminCommand` events (no newline).

    ``shutdown`` is left out unless asked for: it ends the server under test.
    """
    fn = functions if functions is not None else _functions()
    hd = handles if handles is not None else _handles()
    word = fn.filter(lambda b: b" " not in b and b"\n" not in b and b"\r" not in b)
    fixed = [b"status", b"workers", b"show jobs", b"show unique jobs", b"prioritystatus",
             b"getpid", b"version", b"verbose"]
    if shutdown:
        fixed += [b"shutdown", b"shutdown graceful"]
    return st.one_of(
        st.sampled_from(fixed),
        st.builds(lambda f: b"maxqueue " + f, word),
        st.builds(lambda f, n: b"maxqueue %s %d" % (f, n), word, st.integers(0, 3)),
        st.builds(lambda f, n: b"maxqueue %s %d %d %d" % (f, n, n, n), word,
                  st.integers(0, 3)),
        st.builds(lambda h: b"cancel job " + h, hd),
        st.builds(lambda f: b"create function " + f, word),
        st.builds(lambda f: b"drop function " + f, word),
    ).map(AdminCommand)


def admin_lines(*, functions: st.SearchStrategy[bytes] | None = None,
                handles: st.SearchStrategy[bytes] | None = None,
                shutdown: bool = False) -> st.SearchStrategy[bytes]:
    """One admin command line (:func:`admin_commands`), ended by ``\\n`` or ``\\r\\n``."""
    return st.builds(lambda c, end: c.line + end,
                     admin_commands(functions=functions, handles=handles, shutdown=shutdown),
                     st.sampled_from([b"\n", b"\r\n"]))


# -- conversations ----------------------------------------------------------------------

Vocabulary = st.SearchStrategy[bytes] | None
"""A strategy for one kind of argument, or ``None`` for the default."""


def client_conversations(*, max_size: int = 8, functions: Vocabulary = None,
                         uniques: Vocabulary = None, handles: Vocabulary = None,
                         payloads: Vocabulary = None) -> st.SearchStrategy[list[Event]]:
    """What one client sends, in order: mostly submissions, with status queries,
    echoes and options among them."""
    submit = st.builds(SubmitJob, _functions() if functions is None else functions,
                       _payloads() if payloads is None else payloads,
                       _uniques() if uniques is None else uniques,
                       st.sampled_from(Priority), st.booleans())
    other = events(Role.CLIENT, functions=functions, uniques=uniques, handles=handles,
                   payloads=payloads)
    return st.lists(submit | submit | other, min_size=1, max_size=max_size)


@st.composite
def worker_conversations(draw: st.DrawFn, /, *, max_cycles: int = 4,
                         functions: Vocabulary = None, handles: Vocabulary = None,
                         payloads: Vocabulary = None) -> list[Event]:
    """What one worker sends, in order: one or two CAN_DO (or CAN_DO_TIMEOUT), then
    cycles of a GRAB, some WORK_STATUS / DATA / WARNING, one final WORK_COMPLETE, FAIL
    or EXCEPTION, and sometimes PRE_SLEEP; now and then a CANT_DO or RESET_ABILITIES.

    The reports name handles from ``handles`` (the worker cannot know which job
    it will be given): point it at the handles the server under test gives out.
    """
    fn = functions if functions is not None else _functions()
    hd = handles if handles is not None else _handles()
    pl = payloads if payloads is not None else _payloads()
    # The strategies of one cycle, built once (building them is what costs).
    abilities = st.builds(CanDo, fn) | st.builds(CanDoTimeout, fn, _TIMEOUTS)
    grabs = st.sampled_from([GrabJob(), GrabJobUniq(), GrabJobAll()])
    updates = st.lists(st.one_of(st.tuples(st.just(WorkStatus), _NUMBERS, _NUMBERS),
                                 st.tuples(st.sampled_from([WorkData, WorkWarning]), pl)),
                       max_size=2)
    final = st.one_of(st.tuples(st.sampled_from([WorkComplete, WorkException]), pl),
                      st.tuples(st.just(WorkFail)))
    extras = st.sampled_from(["", "", "sleep", "sleep", "cant", "reset"])
    out: list[Event] = [draw(abilities) for _ in range(draw(st.integers(1, 2)))]
    for _ in range(draw(st.integers(1, max_cycles))):
        out.append(draw(grabs))
        handle = draw(hd)
        out += [cls(handle, *rest) for cls, *rest in draw(updates)]
        cls, *rest = draw(final)
        out.append(cls(handle, *rest))
        extra = draw(extras)
        if extra == "sleep":
            out.append(PreSleep())
        elif extra == "cant":
            out.append(CantDo(draw(fn)))
        elif extra == "reset":
            out.append(ResetAbilities())
    return out


class Step(NamedTuple):
    """One step of a :func:`conversations` script: connection ``conn`` sends ``send``
    (events, encoded with the connection's role; ``bytes`` as they are), then closes
    its side if ``close``."""

    conn: int
    send: tuple[Event | bytes, ...]
    close: bool = False


ROLES = ("client", "worker", "admin")
"""The parts a connection plays in :func:`conversations`."""


@st.composite
def conversations(draw: st.DrawFn, /, *, connections: int = 4, max_steps: int = 16,
                  malformed: bool = True, functions: Vocabulary = None,
                  uniques: Vocabulary = None, handles: Vocabulary = None,
                  payloads: Vocabulary = None) -> tuple[tuple[str, ...], list[Step]]:
    """A script for a job server: ``(roles, steps)``.

    ``roles`` gives each of 1 to ``connections`` connections its part (one of
    :data:`ROLES`).  Each :class:`Step` is one connection's turn: a few events
    of its role (a worker's follow the :func:`worker_conversations` cycle
    across its turns; an admin peer's are :class:`AdminCommand` lines), or,
    ending that connection's life, a close, possibly after a
    :func:`malformed_streams` message (when ``malformed``).  Steps after a
    connection closed never name it, and a malformed message (which may be
    unterminated: a truncation, an oversized size field, a line without
    newline) is always followed by the close, so a driver that waits for the
    answers after each step never waits for bytes that cannot come.
    """
    workers = worker_conversations(functions=functions, handles=handles, payloads=payloads)
    more_work = worker_conversations(max_cycles=2, functions=functions, handles=handles,
                                     payloads=payloads)
    talk: dict[str, st.SearchStrategy[list[Event]]] = {
        "client": client_conversations(max_size=3, functions=functions, uniques=uniques,
                                       handles=handles, payloads=payloads),
        "admin": admin_commands(functions=functions, handles=handles).map(lambda c: [c])}
    bad = malformed_streams()
    actions = st.sampled_from(["talk"] * 8 + ["close", "malformed"])
    n = draw(st.integers(1, connections))
    roles = tuple(draw(st.lists(st.sampled_from(["client", "client", "worker", "worker",
                                                 "admin"]), min_size=n, max_size=n)))
    scripts = {i: draw(workers) for i, r in enumerate(roles) if r == "worker"}
    steps: list[Step] = []
    live = list(range(n))
    for _ in range(draw(st.integers(1, max_steps))):
        if not live:
            break
        conn = draw(st.sampled_from(live))
        role = roles[conn]
        action = draw(actions)
        if action == "close" or (action == "malformed" and malformed):
            last: tuple[bytes, ...] = (draw(bad),) if action == "malformed" else ()
            steps.append(Step(conn, last, True))
            live.remove(conn)
            continue
        send: list[Event | bytes]
        if role == "worker":
            script = scripts[conn]
            if not script:
                script += draw(more_work)[1:]
            k = draw(st.integers(1, min(3, len(script))))
            send = list(script[:k])
            del script[:k]
        else:
            send = list(draw(talk[role]))
        steps.append(Step(conn, tuple(send)))
    return roles, steps


# -- malformed byte streams ---------------------------------------------------------------

# Types a client or worker may send (the server must accept their framing) and
# types only the server sends (the server must refuse them).
_REQUEST_TYPES = sorted(t for t, s in SPECS.items() if Role.SERVER in s.receivers)
_RESPONSE_ONLY = sorted(t for t, s in SPECS.items() if s.senders == frozenset({Role.SERVER}))
_KNOWN_TYPES = sorted(SPECS)
_WORDS = st.sampled_from([b"f", b"u1", b"H:fuzz:1", b"", b"1", b"x" * 70]) | st.binary(
    max_size=12)


def _header(magic: bytes, ptype: int, size: int) -> bytes:
    return _HEADER.pack(magic, ptype, size)


def _frame(magic: bytes, ptype: int, args: Sequence[bytes]) -> bytes:
    return encode_packet(magic, ptype, list(args))


@st.composite
def _args_for(draw: st.DrawFn, ptype: int) -> list[bytes]:
    return [draw(_WORDS) for _ in SPECS[ptype].args]


@st.composite
def _malformed(draw: st.DrawFn, kind: str) -> bytes:
    if kind == "bad_magic":
        magic = draw(st.sampled_from([RES, b"\0REQ"[:3] + b"X", b"\0\0\0\0", b"\0req"])
                     | st.binary(min_size=3, max_size=3).map(lambda b: b"\0" + b))
        ptype = draw(st.sampled_from(_REQUEST_TYPES))
        if magic == REQ:
            magic = RES
        return _frame(magic, ptype, draw(_args_for(ptype)))
    if kind == "unknown_type":
        ptype = draw(st.sampled_from([0, 5, 43, 255, 2**16, 2**31, 2**32 - 1])
                     | st.integers(43, 2**32 - 1))
        body = draw(st.binary(max_size=16))
        return _header(REQ, ptype, len(body)) + body
    if kind == "wrong_direction":
        # A response packet sent to the server, or a request with the response magic.
        if draw(st.booleans()):
            ptype = draw(st.sampled_from(_RESPONSE_ONLY))
            return _frame(REQ, ptype, draw(_args_for(ptype)))
        ptype = draw(st.sampled_from(_REQUEST_TYPES))
        return _frame(RES, ptype, draw(_args_for(ptype)))
    if kind == "wrong_arg_count":
        # Extra NULs only lengthen a packet's last argument, so what can be wrong is
        # a payload on a packet of no arguments, or too few NUL-separated ones.
        ptype = draw(st.sampled_from([t for t in _REQUEST_TYPES if len(SPECS[t].args) != 1]))
        n = len(SPECS[ptype].args)
        if n == 0:
            body = draw(st.binary(min_size=1, max_size=8))
            return _header(REQ, ptype, len(body)) + body
        count = draw(st.integers(1, n - 1))
        return _frame(REQ, ptype, [draw(_WORDS.filter(lambda b: 0 not in b))
                                   for _ in range(count)])
    if kind == "oversized":
        ptype = draw(st.sampled_from(_KNOWN_TYPES) | st.integers(0, 60))
        size = draw(st.sampled_from([2**24, 2**25 + 1, 2**31 - 1, 2**31, 2**32 - 1])
                    | st.integers(2**20, 2**32 - 1))
        return _header(REQ, ptype, size) + draw(st.binary(max_size=16))
    if kind == "truncated":
        whole = draw(packets(draw(st.sampled_from([Role.CLIENT, Role.WORKER]))))
        return whole[:draw(st.integers(1, len(whole) - 1))]
    if kind == "nul_in_field":
        ptype = draw(st.sampled_from([t for t in _REQUEST_TYPES if len(SPECS[t].args) > 1]))
        args = draw(_args_for(ptype))
        i = draw(st.integers(0, len(args) - 2))
        at = draw(st.integers(0, len(args[i])))
        args[i] = args[i][:at] + b"\0" + args[i][at:]
        return _frame(REQ, ptype, args)
    if kind == "non_decimal":
        # Not the numbers read leniently, as gearmand reads them (CAN_DO_TIMEOUT's
        # timeout: docs/interoperability.md, "Leniencies"): those are accepted.
        strict = {t: sorted(i for i in SPECS[t].numeric if (t, i) not in _LENIENT_NUMBERS)
                  for t in _REQUEST_TYPES}
        ptype = draw(st.sampled_from([t for t in _REQUEST_TYPES if strict[t]]))
        args = [b"1" if i in SPECS[ptype].numeric else draw(_WORDS.filter(lambda b: 0 not in b))
                for i in range(len(SPECS[ptype].args))]
        bad = draw(st.sampled_from([b"-1", b"1.5", b"abc", b"", b" 1", b"1 ", b"0x10",
                                    b"9" * 21, b"\xc2\xbd", b"+1", b"1e3"]))
        args[draw(st.sampled_from(strict[ptype]))] = bad
        return _frame(REQ, ptype, args)
    if kind == "bad_text":
        return draw(st.one_of(
            st.builds(lambda n: b"s" * n, st.sampled_from([70_000, 200_000])),
            st.binary(min_size=1, max_size=40).filter(lambda b: b[0] != 0 and b"\n" not in b),
            st.builds(lambda a, b: a + b"\0" + b + b"\n", st.sampled_from([b"status", b"x"]),
                      st.binary(max_size=8).filter(lambda b: b"\n" not in b)),
            st.sampled_from([b"\n", b"\r\n", b" \n", b"\r", b"status\r\r\n"])))
    if kind == "garbage":
        return draw(st.binary(min_size=1, max_size=64))
    raise ValueError(f"unknown malformed kind {kind!r}; the kinds are {MALFORMED_KINDS}")


def malformed_streams(*kinds: str) -> st.SearchStrategy[bytes]:
    """One malformed message of one of ``kinds`` (default: all of :data:`MALFORMED_KINDS`),
    as the bytes a broken or hostile client sends the server.

    ``bad_magic``: a binary header whose magic is not ``\\0REQ``.  ``unknown_type``:
    type 0, 5 (unused) or above 42, up to 2**32-1.  ``wrong_direction``: a
    server-only packet (NOOP, JOB_ASSIGN, ...) or a request with ``\\0RES``.
    ``wrong_arg_count``: a request with too few or too many NUL-separated
    arguments.  ``oversized``: a size field of 1 MiB to 4 GiB with few bytes after
    it.  ``truncated``: a valid packet cut short.  ``nul_in_field``: a NUL inside
    an argument that is not the last (the receiver splits the payload elsewhere, so
    it may read a different, well-formed packet).  ``non_decimal``: a number field that is
    not decimal ASCII.  ``bad_text``: admin lines too long, cut short, with NUL or
    empty.  ``garbage``: any bytes.  Several kinds leave the message incomplete,
    so what follows it on the stream would be read as part of it: end the
    connection after it (as :func:`conversations` does).
    """
    chosen = kinds or MALFORMED_KINDS
    for kind in chosen:
        if kind not in MALFORMED_KINDS:
            raise ValueError(f"unknown malformed kind {kind!r}; the kinds are "
                             f"{MALFORMED_KINDS}")
    return st.sampled_from(chosen).flatmap(_malformed)

