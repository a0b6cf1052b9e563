"""``gearman-proto fuzz HOST:PORT``: drive a running job server with generated
conversations and check it against our JobServer as the model (docs/fuzzing.md).

Cases come from :func:`gearman_proto.strategies.conversations` (hypothesis,
the ``fuzz`` extra), run by :mod:`.run`; each finding is shrunk
(:mod:`.shrink`) and written as one reproducer file, which ``--replay FILE``
runs again.  Good citizenship: there is no default target (the user names
one), the run is bounded in time (``--seconds``), cases (``--cases``) and
connections (``--connections``, at most 16 at once), and a host that is not a
loopback address is fuzzed only with ``--allow-remote``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import socket
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from gearman_proto import __version__

from . import known as _known
from .case import Case, handle_ref
from .run import Finding, Outcome, Target, run_case
from .shrink import shrink

__all__ = ["add_arguments", "main", "DESCRIPTION"]

MAX_CONNECTIONS = 16


DESCRIPTION = ("Drive the job server at HOST:PORT with generated client, worker and admin "
               "conversations and malformed bytes; report crashes, hangs, protocol "
               "violations and divergences from gearman-proto's JobServer, each with a "
               "shrunk reproducer.")


def add_arguments(p: Any) -> None:
    """The ``fuzz`` subcommand's flags, on its parser."""
    p.description = DESCRIPTION
    p.add_argument("target", metavar="HOST:PORT", help="the job server to fuzz (required: "
                   "there is no default)")
    p.add_argument("--seconds", type=float, default=60.0,
                   help="time budget for generating cases (default 60)")
    p.add_argument("--cases", type=int, default=0, help="case budget (default 0: as many "
                   "as --seconds allows)")
    p.add_argument("--seed", type=int, default=None, help="seed (default: random, printed)")
    p.add_argument("--output", "-o", type=Path, default=None, metavar="DIR",
                   help="write one reproducer file per finding here")
    p.add_argument("--connections", type=int, default=4,
                   help=f"connections per case, at most {MAX_CONNECTIONS} (default 4)")
    p.add_argument("--known-differences", action="append", default=[], metavar="SET|FILE",
                   help="divergences to count, not report: a file of names or the set "
                        f"{', '.join(_known.SETS)} (repeatable)")
    p.add_argument("--restart", metavar="CMD", default=None,
                   help="command that starts the target again after a crash (e.g. "
                        "'gearmand -p 4731 --threads=1')")
    p.add_argument("--replay", type=Path, default=None, metavar="FILE",
                   help="run one reproducer file instead of fuzzing")
    p.add_argument("--timeout", type=float, default=2.0,
                   help="seconds to wait for an answer before calling it a hang (default 2)")
    p.add_argument("--shrink-seconds", type=float, default=60.0,
                   help="time budget for shrinking each finding (default 60)")
    p.add_argument("--no-malformed", action="store_true",
                   help="only well-formed conversations (no malformed bytes)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a target that is not a loopback address")


def _target(text: str, allow_remote: bool) -> tuple[str, int]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = text.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise SystemExit(f"gearman-proto fuzz: target {text!r} is not HOST:PORT "
                         "(the port is required)")
    try:
        infos = socket.getaddrinfo(host, int(port_text), type=socket.SOCK_STREAM)
    except OSError as exc:
        raise SystemExit(f"gearman-proto fuzz: cannot resolve {host!r}: {exc}") from None
    addresses = {info[4][0] for info in infos}
    if not allow_remote and not all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback
                                    for a in addresses):
        raise SystemExit(f"gearman-proto fuzz: {host} is not a loopback address; fuzzing "
                         "another machine needs --allow-remote (and its owner's consent)")
    return host, int(port_text)


def _check(ns: argparse.Namespace) -> list[_known.Difference]:
    if not 1 <= ns.connections <= MAX_CONNECTIONS:
        raise SystemExit(f"gearman-proto fuzz: --connections must be 1 to {MAX_CONNECTIONS}")
    if not 0 < ns.seconds <= 7 * 86400 or ns.cases < 0 or ns.timeout <= 0:
        raise SystemExit("gearman-proto fuzz: --seconds must be > 0 (at most a week), "
                         "--cases >= 0, --timeout > 0")
    known: list[_known.Difference] = []
    for spec in ns.known_differences:
        try:
            known += _known.load(spec)
        except ValueError as exc:
            raise SystemExit(f"gearman-proto fuzz: {exc}") from None
    return known


def main(ns: argparse.Namespace) -> int:
    """Run the ``fuzz`` subcommand; 0 = no finding, 1 = findings, 2 = could not run."""
    known = _check(ns)
    host, port = _target(ns.target, ns.allow_remote)
    case = None
    if ns.replay is not None:
        try:
            case = Case.load(ns.replay)
        except (OSError, ValueError) as exc:
            print(f"gearman-proto fuzz: --replay {ns.replay}: {exc}", file=sys.stderr)
            return 2
    target = Target(host, port, timeout=ns.timeout, restart=ns.restart,
                    log=lambda line: print(line, file=sys.stderr))
    try:
        problem = target.probe()
        if problem is not None and not target.restart():
            print(f"gearman-proto fuzz: {ns.target}: {problem}", file=sys.stderr)
            return 2
        if case is not None:
            return _replay(case, target, known)
        return _fuzz(ns, target, known)
    finally:
        target.close()


def _replay(case: Case, target: Target, known: list[_known.Difference]) -> int:
    if "description" in case.meta:
        print(f"recorded: {case.meta['description']}")
    outcome = run_case(case, target)
    finding = outcome.finding
    if finding is None:
        print(f"replayed {len(case.steps)} steps: no finding")
        return 0
    excuse = _excused(case, finding, known)
    if excuse:
        print(f"replayed: known difference {excuse}: {finding.summary}")
        return 0
    print(f"replayed: {finding.kind}: {finding.summary}")
    return 1


def _excused(case: Case, finding: Finding, known: list[_known.Difference]) -> str | None:
    if finding.kind != "divergence":
        return None
    return _known.explain(case, finding.step, known)


class _Run:
    """The state of one fuzzing run: budgets, counts, findings."""

    def __init__(self, ns: argparse.Namespace, target: Target,
                 known: list[_known.Difference]) -> None:
        self.ns, self.target, self.known = ns, target, known
        self.deadline: float = time.monotonic() + float(ns.seconds)
        self.cases = 0
        self.steps = 0
        self.excused: Counter[str] = Counter()
        self.findings: list[tuple[Finding, Path | None]] = []
        self.signatures: Counter[tuple[str, ...]] = Counter()
        self.stopped = ""

    def over(self) -> bool:
        budget: int = self.ns.cases
        if self.stopped or (budget and self.cases >= budget):
            return True
        return bool(time.monotonic() > self.deadline)

    def attempt(self, case: Case) -> Outcome | None:
        """Run a case, restarting a dead target first; None if it cannot be run."""
        if self.target.probe() is not None and not self.target.restart():
            return None
        return run_case(case, self.target)

    def one(self, script: Any) -> None:
        if self.over():
            return
        case = Case.from_script(script)
        outcome = self.attempt(case)
        if outcome is None:
            self.stopped = "the target is down and there is no --restart to bring it back"
            return
        self.cases += 1
        self.steps += outcome.steps_run
        finding = outcome.finding
        if finding is None:
            return
        excuse = _excused(case, finding, self.known)
        if excuse:
            self.excused[excuse] += 1
            return
        self.signatures[finding.signature] += 1
        if self.signatures[finding.signature] > 1:
            return  # one reproducer per bug; the count says how often it was hit
        self.record(case, finding)

    def record(self, case: Case, finding: Finding) -> None:
        def retry(candidate: Case) -> Finding | None:
            got = self.attempt(candidate)
            if got is None or got.finding is None:
                return None
            return None if _excused(candidate, got.finding, self.known) else got.finding

        can_shrink = finding.kind not in ("crash", "hang") or self.ns.restart
        tries = 0
        if can_shrink:
            case, finding, tries = shrink(case, finding, retry, seconds=self.ns.shrink_seconds)
        replayed = retry(case) if can_shrink else None
        case.meta = {
            "description": f"{finding.kind}: {finding.summary}",
            "kind": finding.kind,
            "target": self.ns.target,
            "server": self.version,
            "found_by": f"gearman-proto {__version__} fuzz --seed {self.ns.seed}",
            "shrink_tries": tries,
            "reproduced": bool(replayed and replayed.signature == finding.signature),
            **({"detail": {k: v for k, v in finding.detail.items() if k != "signature"}}
               if len(finding.detail) > 1 else {}),
        }
        path = None
        if self.ns.output is not None:
            self.ns.output.mkdir(parents=True, exist_ok=True)
            path = self.ns.output / f"{finding.kind}-{len(self.findings) + 1}.json"
            case.save(path)
        self.findings.append((finding, path))
        print(f"finding {len(self.findings)}: {finding.kind}: {finding.summary}"
              + (f" -> {path}" if path else ""), flush=True)
        if finding.kind in ("crash", "hang") and not self.ns.restart:
            self.stopped = f"the target {finding.kind}ed and there is no --restart"

    version = "?"


def _server_version(target: Target) -> str:
    try:
        with target.connect() as sock:
            sock.sendall(b"version\n")
            return sock.recv(200).decode("latin-1").strip().removeprefix("OK ")
    except OSError:
        return "?"


def _fuzz(ns: argparse.Namespace, target: Target, known: list[_known.Difference]) -> int:
    try:
        from hypothesis import HealthCheck, Phase, given, settings
        from hypothesis import seed as with_seed
        from hypothesis import strategies as st

        from gearman_proto import strategies as gst
    except ImportError:
        print("gearman-proto fuzz: needs hypothesis: pip install 'gearman-proto[fuzz]'",
              file=sys.stderr)
        return 2
    if ns.seed is None:
        ns.seed = random.SystemRandom().randrange(2**31)
    run = _Run(ns, target, known)
    run.version = _server_version(target)
    print(f"gearman-proto fuzz: {ns.target} ({run.version}), seed {ns.seed}, "
          f"{ns.seconds:g} s, up to {ns.connections} connections per case", flush=True)
    # Functions and uniques are references too: each run of a case names its own.
    scripts = gst.conversations(
        connections=ns.connections, malformed=not ns.no_malformed,
        handles=st.integers(1, 6).map(handle_ref),
        functions=st.sampled_from([b"{F1}", b"{F2}", b"{F3}"]),
        uniques=st.sampled_from([b"", b"-", b"{U1}", b"{U2}", b"{U64}"]))
    started = time.monotonic()
    chunk = 0
    while not run.over():
        # Chunks of cases, each seeded from --seed, so a run is repeatable and the
        # budgets are looked at between cases.
        test = settings(max_examples=50, database=None, deadline=None,
                        phases=[Phase.generate], suppress_health_check=list(HealthCheck),
                        )(given(scripts)(run.one))
        with_seed(ns.seed * 100_003 + chunk)(test)()
        chunk += 1
    elapsed = time.monotonic() - started
    summary = {"cases": run.cases, "steps": run.steps, "seconds": round(elapsed, 1),
               "findings": len(run.findings), "restarts": target.restarts,
               "known_differences": dict(run.excused),
               "hits": {" ".join(k): v for k, v in run.signatures.items()}}
    print("summary " + json.dumps(summary), flush=True)
    if run.stopped:
        print(f"gearman-proto fuzz: stopped early: {run.stopped}", file=sys.stderr)
    return 1 if run.findings else 0
