"""Measure awsflock against a local moto server and write BENCHMARKS.md.

Run through scripts/bench.sh, which builds the release binary, starts moto
and sets the environment this script expects:

    BENCH_AWSFLOCK   path of the release binary
    BENCH_PEER       path of the awsflock 0.2.0 CLI
    BENCH_TABLE      a fresh table name (created here)
    BENCH_BUCKET     a fresh S3 bucket name (created here)
    BENCH_ETCD       HOST:PORT of a private etcd
    BENCH_WORK       a scratch directory, removed afterwards
    BENCH_OUT        where to write the report
    BENCH_MOTO_PID   the moto server, whose CPU time is told apart from others'
    BENCH_ETCD_PID   the etcd server, likewise
    AWS_ENDPOINT_URL / DYNAMO_ENDPOINT_URL and test credentials

Trial counts (see scripts/bench.sh): BENCH_RUNS, BENCH_SAMPLES,
BENCH_HANDOFF_TRIALS, BENCH_PEER_HANDOFF_TRIALS, BENCH_WORKERS,
BENCH_SECTIONS_PER_WORKER, BENCH_HOLD_SECONDS, BENCH_WAIT_SECONDS.

Each figure is produced by a section: a function taking the shared context
and returning a Section (rows for the summary table plus detail text). To
add a figure, write a function and append it to SECTIONS.
"""

import datetime
import importlib.metadata
import json
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field

import boto3

RUNS = int(os.environ.get("BENCH_RUNS", "20"))
SAMPLES = int(os.environ.get("BENCH_SAMPLES", "30"))
HANDOFF_TRIALS = int(os.environ.get("BENCH_HANDOFF_TRIALS", "7"))
PEER_HANDOFF_TRIALS = int(os.environ.get("BENCH_PEER_HANDOFF_TRIALS", "3"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "8"))
PER_WORKER = int(os.environ.get("BENCH_SECTIONS_PER_WORKER", "25"))
HOLD_SECONDS = int(os.environ.get("BENCH_HOLD_SECONDS", "65"))
WAIT_SECONDS = int(os.environ.get("BENCH_WAIT_SECONDS", "30"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_MIB = 1024 * 1024


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Helpers


@dataclass
class Row:
    figure: str
    measured: str
    target: str = "—"
    met: bool | None = None  # None: informational, no target


@dataclass
class Section:
    title: str
    rows: list = field(default_factory=list)
    detail: list = field(default_factory=list)  # markdown lines
    misses: list = field(default_factory=list)  # markdown lines, one per missed target
    # Called with the context after every section has run, for text that
    # draws on later sections' figures.
    finish: object = None


@dataclass
class Stats:
    median: float
    p90: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, xs):
        xs = sorted(xs)
        # nearest-rank p90
        k = max(0, min(len(xs) - 1, -(-9 * len(xs) // 10) - 1))
        return cls(statistics.median(xs), xs[k], xs[0], xs[-1], len(xs))

    def ms(self):
        return (
            f"median {self.median * 1e3:.1f} ms, p90 {self.p90 * 1e3:.1f} ms, "
            f"min {self.min * 1e3:.1f} ms (n={self.n})"
        )


def ms(x):
    return f"{x * 1e3:.1f} ms"


def mark(met):
    return "—" if met is None else ("yes" if met else "**no**")


def run(argv, env=None, check=True, capture=True):
    """Runs argv; returns (seconds, CompletedProcess)."""
    t0 = time.perf_counter()
    cp = subprocess.run(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
        stderr=subprocess.PIPE if capture else subprocess.DEVNULL,
        text=True,
    )
    dt = time.perf_counter() - t0
    if check and cp.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {cp.returncode}\nstdout: {cp.stdout}\nstderr: {cp.stderr}"
        )
    return dt, cp


STORE_LINE = re.compile(r"store_request")
OP = re.compile(r"\bop=(\w+)")
REQ_MS = re.compile(r"\bms=(\d+)")
TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z")


def store_requests(stderr):
    """The store_request lines of a -v run: list of (op, ms, timestamp)."""
    out = []
    for line in stderr.splitlines():
        if not STORE_LINE.search(line):
            continue
        op = OP.search(line)
        m = REQ_MS.search(line)
        ts = TS.search(line)
        t = None
        if ts:
            t = (
                datetime.datetime.fromisoformat(ts.group(1)[:26])
                .replace(tzinfo=datetime.timezone.utc)
                .timestamp()
            )
        out.append((op.group(1) if op else "?", int(m.group(1)) if m else 0, t))
    return out


def count_ops(reqs):
    counts = {}
    for op, _, _ in reqs:
        counts[op] = counts.get(op, 0) + 1
    return ", ".join(f"{op} × {n}" for op, n in counts.items()) or "none"


def cpu_busy():
    """Seconds of CPU used on the whole machine since boot (all CPUs)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    # user nice system idle iowait irq softirq steal ...
    v = [int(x) for x in fields]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / CLK_TCK


def cpu_ours(servers):
    """Seconds of CPU used by the servers (moto, etcd), this script and its
    reaped children."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        total += ru.ru_utime + ru.ru_stime
    for pid in servers:
        _, c = read_proc(pid)
        total += c or 0.0
    return total


class Others:
    """Measures the share of the machine's CPUs used by other processes
    (neither moto, etcd nor this benchmark) over a stretch of time."""

    def __init__(self, ctx):
        self.servers = ctx.servers
        self.t0 = time.perf_counter()
        self.busy0 = cpu_busy()
        self.ours0 = cpu_ours(self.servers)

    def share(self):
        wall = time.perf_counter() - self.t0
        busy = cpu_busy() - self.busy0
        ours = cpu_ours(self.servers) - self.ours0
        ncpu = len(os.sched_getaffinity(0))
        return max(0.0, busy - ours) / (wall * ncpu)


class Ctx:
    """What every section needs, plus results shared between sections."""

    def __init__(self):
        self.ours = os.environ["BENCH_AWSFLOCK"]
        self.peer = os.environ["BENCH_PEER"]
        self.table = os.environ["BENCH_TABLE"]
        self.env = dict(os.environ)
        self.peer_env = dict(os.environ, AWSFLOCK_TABLE=self.table)
        self.results = {}
        self.moto_pid = int(os.environ.get("BENCH_MOTO_PID", "0") or 0)
        self.etcd_pid = int(os.environ.get("BENCH_ETCD_PID", "0") or 0)
        self.servers = [p for p in (self.moto_pid, self.etcd_pid) if p]
        self.lock_prefix = "bench-" + uuid.uuid4().hex[:8]
        self.work = os.environ["BENCH_WORK"]
        self.bucket = os.environ["BENCH_BUCKET"]
        self.etcd = os.environ["BENCH_ETCD"]
        # The stores every multi-store section runs on, by display name.
        self.backends = {
            "DynamoDB": f"dynamodb://{self.table}",
            "S3": f"s3://{self.bucket}/bench/",
            "etcd": f"etcd://{self.etcd}/{self.lock_prefix}/",
            "local directory": f"file://{self.work}/locks",
        }

    def lock(self, name):
        return f"{self.lock_prefix}-{name}"

    def ours_cmd(self, *args, verbose=False):
        argv = [self.ours]
        if verbose:
            argv.append("-v")
        return argv + list(args) + ["--table", self.table]

    def ours_run(self, lock, *cmd, verbose=False, extra=()):
        argv = [self.ours] + (["-v"] if verbose else [])
        return argv + ["run", lock, "--table", self.table, *extra, "--", *cmd]

    def run_on(self, backend, lock, *cmd, verbose=False, quiet=False, extra=()):
        """`awsflock [-v] [-q] run LOCK --backend URL EXTRA... -- CMD...`"""
        argv = [self.ours] + (["-v"] if verbose else []) + (["-q"] if quiet else [])
        return argv + ["run", lock, "--backend", backend, *extra, "--", *cmd]

    def scratch(self, name):
        """A fresh empty directory under the work directory."""
        d = os.path.join(self.work, "scratch", f"{name}-{uuid.uuid4().hex[:6]}")
        os.makedirs(d)
        return d


# --------------------------------------------------------------------------
# Sections


def section_cycle(ctx):
    """Uncontended cycle: ours (run -- true) vs the peer (acquire + release)."""
    sec = Section("Uncontended cycle")
    ours_lock = ctx.lock("cycle")
    peer_lock = ctx.lock("cycle-peer")

    def ours_once():
        dt, _ = run(ctx.ours_run(ours_lock, "true"))
        return dt

    def peer_once():
        t0 = time.perf_counter()
        _, cp = run([ctx.peer, "acquire", peer_lock], env=ctx.peer_env)
        lease = cp.stdout.strip().splitlines()[-1].strip()
        run([ctx.peer, "release", peer_lock, lease], env=ctx.peer_env)
        return time.perf_counter() - t0

    # One warm-up each: the first use of a name creates its item.
    ours_once()
    peer_once()
    others = Others(ctx)
    ours, peer = [], []
    for i in range(RUNS):
        ours.append(ours_once())
        peer.append(peer_once())
    busy = others.share()
    ctx.results["cycle_others"] = busy
    so, sp = Stats.of(ours), Stats.of(peer)
    ratio = so.median / sp.median
    ctx.results["cycle"] = so
    ctx.results["cycle_peer"] = sp

    # Where our time goes: the same cycle with -v, whose per-request log
    # lines carry the time spent in the store and when each request ended.
    startup, store, other, walls, first_ms, last_ms = [], [], [], [], [], []
    for _ in range(max(5, RUNS // 2)):
        t_wall = time.time()
        dt, cp = run(ctx.ours_run(ours_lock, "true", verbose=True))
        reqs = store_requests(cp.stderr)
        if not reqs or reqs[0][2] is None:
            continue
        in_store = sum(r[1] for r in reqs) / 1e3
        first_start = reqs[0][2] - reqs[0][1] / 1e3
        startup.append(max(0.0, first_start - t_wall))
        store.append(in_store)
        first_ms.append(reqs[0][1] / 1e3)
        last_ms.append(reqs[-1][1] / 1e3)
        walls.append(dt)
        other.append(max(0.0, dt - in_store - startup[-1]))
    ctx.results["cycle_store"] = statistics.median(store) if store else None

    ok_abs = so.median <= 0.030
    ok_rel = ratio <= 0.10
    sec.rows += [
        Row("Uncontended cycle, `awsflock run L -- true`", so.ms(), "≤ 30 ms median", ok_abs),
        Row(
            "Uncontended cycle, awsflock 0.2.0 `acquire` + `release`",
            sp.ms(),
        ),
        Row("Ours ÷ awsflock 0.2.0 (medians)", f"{ratio:.3f}", "≤ 0.10", ok_rel),
    ]
    sec.detail += [
        f"{RUNS} runs each after one warm-up each, interleaved (ours, theirs, ours, …), "
        f"same lock name every time, same moto server and table. While they ran, "
        f"processes other than moto and the benchmark used {busy:.0%} of the machine's "
        "CPU time (from `/proc/stat`, less the CPU time of moto, the benchmark and "
        "the processes it ran).",
        "",
        "| Tool | median | p90 | min | max |",
        "|---|---:|---:|---:|---:|",
        f"| awsflock `run L -- true` | {ms(so.median)} | {ms(so.p90)} | {ms(so.min)} | {ms(so.max)} |",
        f"| awsflock 0.2.0 `acquire L2` + `release L2 ID` | {ms(sp.median)} | {ms(sp.p90)} | {ms(sp.min)} | {ms(sp.max)} |",
    ]
    if store:
        sec.detail += [
            "",
            f"Breakdown of our cycle from {len(walls)} further runs with `-v` "
            "(medians; the log gives each store request's duration and end time):",
            "",
            "| Part | median |",
            "|---|---:|",
            f"| whole cycle with `-v` | {ms(statistics.median(walls))} |",
            f"| process start to first store request | {ms(statistics.median(startup))} |",
            f"| inside store requests (acquire + release) | {ms(statistics.median(store))} |",
            f"| … of which the acquire request | {ms(statistics.median(first_ms))} |",
            f"| … of which the release request | {ms(statistics.median(last_ms))} |",
            f"| the rest (command and watchdog spawn, waits, exit) | {ms(statistics.median(other))} |",
        ]
        ctx.results["cycle_breakdown"] = (
            statistics.median(startup),
            statistics.median(store),
            statistics.median(other),
        )
    def finish(ctx):
        if ok_abs:
            return
        reason = ""
        if store:
            st, sr, ot = ctx.results["cycle_breakdown"]
            reason = (
                f" In the `-v` runs, {ms(sr)} of the cycle was spent inside the two store "
                f"requests (acquire {ms(statistics.median(first_ms))}, release "
                f"{ms(statistics.median(last_ms))})"
            )
            if "put" in ctx.results:
                reason += (
                    f", where moto answers a bare conditional PutItem in "
                    f"{ms(ctx.results['put'].median)} and a grant-shaped UpdateItem in "
                    f"{ms(ctx.results['update'].median)} on a warm connection"
                )
            reason += f"; {ms(st)} went from process start to the first request"
            if "ours_start" in ctx.results:
                reason += f" (`awsflock --version` alone takes {ms(ctx.results['ours_start'].median)})"
            reason += (
                f", and {ms(ot)} to the rest (spawning the command and the watchdog, "
                "waiting for both, exiting)."
            )
            if "limit" in ctx.results:
                reason += (
                    f" Two PutItems and a spawn of `true` alone come to "
                    f"{ms(ctx.results['limit'])}."
                )
        if busy >= 0.10:
            reason += (
                f" The machine was not idle: other processes used {busy:.0%} of its "
                f"CPU time while the cycles ran; the fastest cycle took {ms(so.min)}."
            )
        sec.misses.append(
            f"Uncontended cycle median is {ms(so.median)}, above the 30 ms target.{reason}"
        )

    sec.finish = finish
    if not ok_rel:
        sec.misses.append(
            f"Ours is {ratio:.3f} × awsflock 0.2.0's median, above the 0.10 target."
        )
    return sec


def section_requests(ctx):
    """Store requests per uncontended cycle and per CLI command."""
    sec = Section("Requests per operation")
    lock = ctx.lock("reqs")
    # Warm-up: the first cycle on a new name creates its item.
    _, first = run(ctx.ours_run(lock, "true", verbose=True))
    first_reqs = store_requests(first.stderr)
    _, cp = run(ctx.ours_run(lock, "true", verbose=True))
    cycle = store_requests(cp.stderr)

    # acquire / renew / release on a name used before (by the cycles above).
    _, cp = run(ctx.ours_cmd("acquire", lock, verbose=True))
    acq = store_requests(cp.stderr)
    lease = cp.stdout.strip().splitlines()[-1].strip()
    _, cp = run(ctx.ours_cmd("renew", lock, lease, verbose=True))
    ren = store_requests(cp.stderr)
    lease = cp.stdout.strip().splitlines()[-1].strip() or lease
    _, cp = run(ctx.ours_cmd("release", lock, lease, verbose=True))
    rel = store_requests(cp.stderr)

    # acquire of a name never used before, for reference.
    fresh = ctx.lock("reqs-fresh")
    _, cp = run(ctx.ours_cmd("acquire", fresh, verbose=True))
    acq_fresh = store_requests(cp.stderr)
    run(ctx.ours_cmd("release", fresh, cp.stdout.strip().splitlines()[-1].strip()))

    def row(figure, reqs, want):
        met = None if want is None else len(reqs) <= want
        return Row(
            figure,
            f"{len(reqs)} ({count_ops(reqs)})",
            "—" if want is None else str(want),
            met,
        )

    # Every target counts the one DescribeTable each process sends first, to
    # check that the table is not a global table (DESIGN.md, "Global tables").
    sec.rows += [
        row("Requests, `run L -- true` on a used lock", cycle, 3),
        row("Requests, `acquire` (used lock, free)", acq, 2),
        row("Requests, `renew`", ren, 2),
        row("Requests, `release`", rel, 2),
        row("Requests, `acquire` of a never-used name", acq_fresh, None),
    ]
    sec.detail += [
        "Counted from the `store_request` lines that `-v` logs for every HTTP "
        "attempt (failed attempts included). Each process sends one "
        "DescribeTable first, to check that the table is not a global table "
        "(DESIGN.md, \"Global tables\"); it is counted.",
        "",
        f"- first `run` on a new name: {len(first_reqs)} ({count_ops(first_reqs)})",
        f"- `run` on the same name again: {len(cycle)} ({count_ops(cycle)})",
        f"- `acquire` / `renew` / `release` on that name: {len(acq)} / {len(ren)} / {len(rel)}",
        f"- `acquire` of a never-used name: {len(acq_fresh)} ({count_ops(acq_fresh)})",
    ]
    for figure, reqs, want in [
        ("`run L -- true`", cycle, 3),
        ("`acquire`", acq, 2),
        ("`renew`", ren, 2),
        ("`release`", rel, 2),
    ]:
        if len(reqs) > want:
            sec.misses.append(
                f"{figure} made {len(reqs)} store requests ({count_ops(reqs)}), target {want}."
            )
    return sec


def read_proc(pid):
    """(VmHWM bytes or None, utime+stime seconds or None) of a live or zombie pid."""
    hwm = cpu = None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            # comm may contain spaces; fields after the closing paren.
            rest = f.read().rsplit(")", 1)[1].split()
            cpu = (int(rest[11]) + int(rest[12])) / CLK_TCK  # utime, stime
    except (OSError, IndexError, ValueError):
        pass
    return hwm, cpu


def children_of(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def section_footprint(ctx):
    """Supervisor peak RSS and CPU over a 12 s run with a 6 s lease."""
    sec = Section("Footprint")
    lock = ctx.lock("footprint")
    argv = ctx.ours_run(lock, "sleep", "12", extra=["--lease-duration", "6"])
    t0 = time.perf_counter()
    p = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    hwm = 0
    cpu = 0.0
    wd_pid, wd_hwm, wd_cpu = None, 0, 0.0
    # Poll until the supervisor is a zombie (waitid with WNOWAIT does not
    # reap it), then read its final CPU time before reaping.
    while True:
        res = os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        h, c = read_proc(p.pid)
        if h is not None:
            hwm = max(hwm, h)
        if c is not None:
            cpu = max(cpu, c)
        if wd_pid is None:
            for kid in children_of(p.pid):
                args = cmdline(kid)
                if len(args) > 1 and args[1] == b"__watchdog":
                    wd_pid = kid
        if wd_pid is not None:
            h, c = read_proc(wd_pid)
            if h is not None:
                wd_hwm = max(wd_hwm, h)
            if c is not None:
                wd_cpu = max(wd_cpu, c)
        if res is not None:
            break
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    stderr = p.stderr.read()
    p.stderr.close()
    # Reap it ourselves for its rusage: a cross-check that also counts the
    # children it waited for (the command and the watchdog).
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}: {stderr}")
    ru_cpu = ru.ru_utime + ru.ru_stime
    size = os.path.getsize(ctx.ours)
    ok_rss = hwm <= 20 * PAGE_MIB
    ok_cpu = cpu <= 0.5
    sec.rows += [
        Row("Supervisor peak RSS (VmHWM), 12 s run, 6 s lease", f"{hwm / PAGE_MIB:.1f} MiB", "≤ 20 MiB", ok_rss),
        Row(
            "Supervisor CPU (user + system), same run",
            f"{cpu:.2f} s" + (f" (under one clock tick, 1/{CLK_TCK} s)" if cpu == 0 else ""),
            "≤ 0.5 s",
            ok_cpu,
        ),
        Row("Release binary size", f"{size} bytes ({size / PAGE_MIB:.1f} MiB)"),
    ]
    sec.detail += [
        f"`awsflock run L --lease-duration 6 -- sleep 12` took {wall:.1f} s (renewing every "
        "2 s, a third of the lease). VmHWM and utime + stime of the "
        "awsflock process alone were read from `/proc/PID/status` and `/proc/PID/stat` "
        f"every 100 ms, the CPU time a last time after it exited and before it was reaped "
        f"(clock ticks of 1/{CLK_TCK} s).",
        "",
        f"Cross-check from `wait4`, which also counts the `sleep` and the watchdog "
        f"awsflock waited for: {ru_cpu:.3f} s CPU "
        f"(user {ru.ru_utime:.3f} s, system {ru.ru_stime:.3f} s), "
        f"largest peak RSS among them {ru.ru_maxrss / 1024:.1f} MiB. That RSS is not "
        "awsflock's: Linux carries the peak of the pre-exec process (here a fork of "
        "this Python benchmark, whose own peak RSS is "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB) "
        "into `ru_maxrss`, so VmHWM above is the figure to trust.",
    ]
    if wd_pid is not None:
        sec.detail.append("")
        sec.detail.append(
            f"The watchdog process it starts (`awsflock __watchdog`) peaked at "
            f"{wd_hwm / PAGE_MIB:.1f} MiB RSS and used {wd_cpu:.2f} s CPU (not in the supervisor's figures)."
        )
    if not ok_rss:
        sec.misses.append(f"Supervisor peak RSS is {hwm / PAGE_MIB:.1f} MiB, above 20 MiB.")
    if not ok_cpu:
        sec.misses.append(f"Supervisor CPU time is {cpu:.2f} s, above 0.5 s.")
    return sec


def section_limit(ctx):
    """What moto and the OS cost at least: two PutItems and a spawn."""
    sec = Section("The limit")
    client = boto3.client("dynamodb")
    key = ctx.lock("limit")
    lease = None

    def put():
        nonlocal lease
        new = str(uuid.uuid4())
        kw = dict(
            TableName=ctx.table,
            Item={
                "lock_id": {"S": key},
                "lease_id": {"S": new},
                "expiration_time": {"N": str(int(time.time()) + 60)},
            },
        )
        if lease is None:
            kw["ConditionExpression"] = "attribute_not_exists(lock_id)"
        else:
            kw["ConditionExpression"] = "lease_id = :old"
            kw["ExpressionAttributeValues"] = {":old": {"S": lease}}
        t0 = time.perf_counter()
        client.put_item(**kw)
        dt = time.perf_counter() - t0
        lease = new
        return dt

    for _ in range(3):
        put()
    puts = Stats.of([put() for _ in range(SAMPLES)])
    client.delete_item(TableName=ctx.table, Key={"lock_id": {"S": key}})

    # An UpdateItem shaped like awsflock's grant (ten SETs, one of them an
    # increment, three REMOVEs, a two-part condition), to show what moto
    # charges for the request awsflock actually sends.
    ukey = ctx.lock("limit-update")
    client.put_item(
        TableName=ctx.table,
        Item={
            "lock_id": {"S": ukey},
            "lease_id": {"S": "none"},
            "fence": {"N": "0"},
            "fence_limit": {"N": "1000000"},
        },
    )
    seen = "none"

    def update():
        nonlocal seen
        new = str(uuid.uuid4())
        now = int(time.time())
        sets = {
            "lease_id": {"S": new},
            "lease_duration": {"N": "60"},
            "owner": {"S": "bench"},
            "expiration_time": {"N": str(now + 60)},
            "expires_ms": {"N": str(now * 1000 + 60000)},
            "acquired_ms": {"N": str(now * 1000)},
            "pid": {"N": str(os.getpid())},
            "host": {"S": platform.node()},
            "client": {"S": "bench"},
        }
        names = {f"#{k}": k for k in sets}
        names.update({"#reason": "reason", "#rl": "released_lease", "#rm": "released_ms"})
        names.update({"#fence": "fence", "#fence_limit": "fence_limit"})
        values = {f":{k}": v for k, v in sets.items()}
        values.update({":one": {"N": "1"}, ":seen": {"S": seen}})
        expr = "SET " + ", ".join(f"#{k} = :{k}" for k in sets)
        expr += ", #fence = #fence + :one REMOVE #reason, #rl, #rm"
        t0 = time.perf_counter()
        client.update_item(
            TableName=ctx.table,
            Key={"lock_id": {"S": ukey}},
            UpdateExpression=expr,
            ConditionExpression="#lease_id = :seen AND #fence < #fence_limit",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ReturnValues="UPDATED_NEW",
        )
        dt = time.perf_counter() - t0
        seen = new
        return dt

    for _ in range(3):
        update()
    updates = Stats.of([update() for _ in range(SAMPLES)])
    client.delete_item(TableName=ctx.table, Key={"lock_id": {"S": ukey}})

    spawns = Stats.of([run(["true"], capture=False)[0] for _ in range(SAMPLES)])
    ours_start = Stats.of([run([ctx.ours, "--version"], capture=False)[0] for _ in range(SAMPLES)])

    limit = 2 * puts.median + spawns.median
    cycle = ctx.results.get("cycle")
    sec.rows += [
        Row("Conditional PutItem round trip (boto3, persistent connection)", puts.ms()),
        Row("Spawn of `true` (subprocess)", spawns.ms()),
        Row("Spawn of `awsflock --version`", ours_start.ms()),
        Row("Grant-shaped conditional UpdateItem round trip (boto3, persistent connection)", updates.ms()),
        Row("Limit: 2 × PutItem + spawn of `true`", ms(limit)),
    ]
    if cycle is not None:
        sec.rows.append(
            Row(
                "Uncontended cycle ÷ limit (medians)",
                f"{cycle.median / limit:.2f} ({ms(cycle.median - limit)} above the limit)",
            )
        )
    sec.detail += [
        "Measured in the same run as the cycle, against the same moto server and table. "
        f"PutItem: {SAMPLES} samples after 3 warm-ups, each conditional on the previous "
        "lease id, as a takeover is. Spawns: median of "
        f"{SAMPLES} `subprocess.run` calls.",
    ]
    sec.detail += [""]
    sec.detail.append(
        "The grant-shaped UpdateItem mirrors the request awsflock sends to take a "
        "lock it has used before (ten SETs including a counter increment, three "
        "REMOVEs, a two-part condition); two of them plus a spawn of `true` come to "
        f"{ms(2 * updates.median + spawns.median)}."
    )
    if cycle is not None:
        sec.detail.append("")
        sec.detail.append(
            "The limit ignores the connection set-up a new process pays and the "
            "command's own spawn on top of awsflock's; "
            f"`awsflock --version` alone takes {ms(ours_start.median)}."
        )
    ctx.results["limit"] = limit
    ctx.results["put"] = puts
    ctx.results["update"] = updates
    ctx.results["ours_start"] = ours_start
    return sec


# --------------------------------------------------------------------------
# Stores: hand-off, contention, the cost of holding and waiting

OUTCOME = re.compile(r"\boutcome=(\w+)")


def store_lines(stderr):
    """The store_request lines of a -v run as dicts: op, outcome, ms, end
    (wall-clock seconds at which the request ended) and start (end - ms)."""
    out = []
    for line in stderr.splitlines():
        if not STORE_LINE.search(line):
            continue
        op = OP.search(line)
        oc = OUTCOME.search(line)
        m = REQ_MS.search(line)
        ts = TS.search(line)
        end = None
        if ts:
            end = (
                datetime.datetime.fromisoformat(ts.group(1)[:26])
                .replace(tzinfo=datetime.timezone.utc)
                .timestamp()
            )
        dur = int(m.group(1)) / 1e3 if m else 0.0
        out.append(
            {
                "op": op.group(1) if op else "?",
                "outcome": oc.group(1) if oc else ("failed" if "failed" in line else "?"),
                "ms": dur,
                "end": end,
                "start": None if end is None else end - dur,
            }
        )
    return out


def tally(lines, key=lambda r: r["op"]):
    counts = {}
    for r in lines:
        k = key(r)
        counts[k] = counts.get(k, 0) + 1
    return counts


def fmt_tally(counts, per=1):
    if not counts:
        return "none"
    fmt = (lambda n: str(n)) if per == 1 else (lambda n: f"{n / per:.2f}")
    return ", ".join(f"{k} × {fmt(n)}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def op_outcome(r):
    return r["op"] if r["outcome"] in ("ok", "?") else f"{r['op']} ({r['outcome']})"


def read_ns(path):
    """A `date +%s%N` written by a child, in seconds."""
    with open(path) as f:
        return int(f.read().strip()) / 1e9


def wait_for_file(path, proc, timeout, what):
    deadline = time.perf_counter() + timeout
    while not os.path.exists(path) or os.path.getsize(path) == 0:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode} before its command started")
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{what}: its command did not start within {timeout} s")
        time.sleep(0.005)


def etcd_grpc(ctx):
    """etcd's own counters: {(kind, method): n} for calls started and
    stream messages received, from its Prometheus endpoint."""
    out = {}
    with urllib.request.urlopen(f"http://{ctx.etcd}/metrics", timeout=5) as f:
        text = f.read().decode()
    pat = re.compile(
        r'^grpc_server_(started|msg_received)_total\{grpc_method="(\w+)",'
        r'grpc_service="([\w.]+)",grpc_type="(\w+)"\} (\S+)$'
    )
    for line in text.splitlines():
        m = pat.match(line)
        if m:
            kind, method, _, typ, n = m.groups()
            out[(kind, method, typ)] = out.get((kind, method, typ), 0) + int(float(n))
    return out


def etcd_diff(before, after):
    calls, msgs = {}, {}
    for k, n in after.items():
        d = n - before.get(k, 0)
        if d <= 0:
            continue
        kind, method, typ = k
        if kind == "started":
            calls[method] = calls.get(method, 0) + d
        elif typ != "unary":
            msgs[method] = msgs.get(method, 0) + d
    return calls, msgs


def handoff_trial(ctx, backend, lock, verbose):
    """One hand-off: a holder whose command sleeps 1 s and writes the time it
    ends, a waiter started ~0.3 s after the holder (once the holder's command
    runs) whose command writes the time it starts. Returns a dict."""
    d = ctx.scratch("handoff")
    held, end, start = (os.path.join(d, n) for n in ("HELD", "END", "START"))
    hlog, wlog = os.path.join(d, "holder.log"), os.path.join(d, "waiter.log")
    q = shlex.quote
    holder_argv = ctx.run_on(
        backend, lock, "sh", "-c",
        f"date +%s%N > {q(held)}; sleep 1; date +%s%N > {q(end)}",
        verbose=verbose, quiet=True,
    )
    waiter_argv = ctx.run_on(
        backend, lock, "sh", "-c", f"date +%s%N > {q(start)}",
        verbose=verbose, quiet=True, extra=["--wait-time", "30"],
    )
    with open(hlog, "w") as hf, open(wlog, "w") as wf:
        t0 = time.perf_counter()
        holder = subprocess.Popen(holder_argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=hf)
        try:
            wait_for_file(held, holder, 30, "the holder")
            pause = 0.3 - (time.perf_counter() - t0)
            if pause > 0:
                time.sleep(pause)
            waiter = subprocess.Popen(waiter_argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=wf)
            rc_w = waiter.wait(90)
            rc_h = holder.wait(90)
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait()
    with open(hlog) as f:
        htext = f.read()
    with open(wlog) as f:
        wtext = f.read()
    if rc_h != 0 or rc_w != 0:
        raise RuntimeError(
            f"hand-off on {backend}: holder exited {rc_h}, waiter {rc_w}\n"
            f"holder: {htext}\nwaiter: {wtext}"
        )
    t_end, t_start = read_ns(end), read_ns(start)
    tr = {"handoff": t_start - t_end, "end": t_end, "start": t_start}
    # Where the time went, from the -v logs (each line: the request's
    # duration and the wall-clock time it ended).
    h, w = store_lines(htext), store_lines(wtext)
    if verbose and h and w and h[-1]["end"] is not None:
        rel = h[-1]
        acq = [r for r in w if r["end"] is not None and r["end"] <= t_start]
        notice = next((r for r in acq if r["end"] > rel["end"]), None)
        if acq and notice is not None:
            tr["parts"] = (
                rel["start"] - t_end,  # child end -> release request sent
                rel["ms"],  # the release request
                max(0.0, notice["start"] - rel["end"]),  # -> waiter's next request
                acq[-1]["end"] - max(notice["start"], rel["end"]),  # its requests up to the grant
                t_start - acq[-1]["end"],  # grant -> child start
            )
            tr["notice_requests"] = [op_outcome(r) for r in acq if r["end"] > rel["end"]]
    return tr


def peer_handoff_trial(ctx, lock):
    """awsflock 0.2.0: a holder acquires, holds 10 s and releases; a waiter
    `acquire --wait-time 60` started just after the holder's acquire. The
    hand-off is the waiter's acquire returning - the holder's release returning."""
    env = ctx.peer_env
    _, cp = run([ctx.peer, "acquire", lock, "--lease-duration", "120"], env=env)
    lease = cp.stdout.strip().splitlines()[-1].strip()
    t_held = time.perf_counter()
    waiter = subprocess.Popen(
        [ctx.peer, "acquire", lock, "--wait-time", "60", "--lease-duration", "120"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    returned = {}

    def reap():
        out, err = waiter.communicate()
        returned["t"] = time.perf_counter()
        returned["out"], returned["err"] = out, err

    th = threading.Thread(target=reap)
    th.start()
    time.sleep(max(0.0, t_held + 10 - time.perf_counter()))
    run([ctx.peer, "release", lock, lease], env=env)
    t_rel = time.perf_counter()
    th.join(120)
    if waiter.returncode != 0:
        raise RuntimeError(f"0.2.0 waiter exited {waiter.returncode}: {returned.get('err')}")
    run([ctx.peer, "release", lock, returned["out"].strip().splitlines()[-1].strip()], env=env)
    if returned["t"] < t_rel:
        raise RuntimeError("0.2.0 waiter acquired before the holder released")
    return returned["t"] - t_rel


def section_handoff(ctx):
    """Hand-off latency per store: holder's command ends -> waiter's starts."""
    sec = Section("Hand-off latency")
    others = Others(ctx)
    results = {}
    for name, backend in ctx.backends.items():
        verbose = name != "etcd"  # etcd logs no per-request lines
        lock = ctx.lock("handoff")
        run(ctx.run_on(backend, lock, "true"))  # first use creates the item
        trials = [handoff_trial(ctx, backend, lock, verbose) for _ in range(HANDOFF_TRIALS)]
        results[name] = trials
        log(f"  hand-off {name}: " + ", ".join(ms(t["handoff"]) for t in trials))
    busy = others.share()
    peer = []
    peer_others = None
    if PEER_HANDOFF_TRIALS > 0:
        po = Others(ctx)
        plock = ctx.lock("handoff-peer")
        for _ in range(PEER_HANDOFF_TRIALS):
            peer.append(peer_handoff_trial(ctx, plock))
            log(f"  hand-off awsflock 0.2.0: {peer[-1]:.2f} s")
        peer_others = po.share()

    targets = {
        "DynamoDB": (0.200, 0.500),
        "S3": (0.200, 0.500),
        "etcd": (0.020, None),
        "local directory": (None, None),
    }
    overlaps = {n: [t for t in trs if t["handoff"] < 0] for n, trs in results.items()}
    detail_rows = []
    for name, trs in results.items():
        xs = [t["handoff"] for t in trs]
        st = Stats.of(xs)
        med_t, max_t = targets[name]
        want = []
        met = None
        if med_t is not None:
            want.append(f"≤ {med_t * 1e3:.0f} ms median")
            met = st.median <= med_t
        if max_t is not None:
            want.append(f"≤ {max_t * 1e3:.0f} ms max")
            met = met and st.max <= max_t
        if overlaps[name]:
            met = False
        label = name + (" (reference)" if med_t is None else "")
        sec.rows.append(
            Row(
                f"Hand-off, {label}: holder's command ends → waiter's starts",
                f"median {ms(st.median)}, max {ms(st.max)} (n={st.n})",
                ", ".join(want) or "—",
                met,
            )
        )
        ctx.results[f"handoff_{name}"] = st
        detail_rows.append(
            f"| {name} | {ms(st.median)} | {ms(st.min)} | {ms(st.max)} | "
            + ", ".join(f"{x * 1e3:.0f}" for x in xs)
            + " |"
        )
        if overlaps[name]:
            sec.misses.append(
                f"Hand-off on {name}: in {len(overlaps[name])} of {len(trs)} trials the "
                "waiter's command started before the holder's had ended (two holders at once)."
            )
        parts = [t["parts"] for t in trs if "parts" in t]
        if med_t is not None and not (met or overlaps[name]):
            miss = (
                f"Hand-off on {name}: median {ms(st.median)}, max {ms(st.max)} over {st.n} trials; "
                f"target {', '.join(want)}."
            )
            if parts:
                med = [statistics.median(p[i] for p in parts) for i in range(5)]
                miss += (
                    f" From the `-v` logs (medians over {len(parts)} trials): the holder sent its "
                    f"release {ms(med[0])} after its command ended and the release took "
                    f"{ms(med[1])}; the waiter's next request began {ms(med[2])} after that "
                    f"(it polls a held lock every 100–300 ms, jittered, so it sleeps out the rest "
                    f"of its pause: {ms(min(p[2] for p in parts))} to {ms(max(p[2] for p in parts))} "
                    f"here); its read and grant took {ms(med[3])} and the command started "
                    f"{ms(med[4])} after the grant."
                )
            if busy >= 0.10:
                miss += (
                    f" Other processes used {busy:.0%} of the machine's CPU time while the "
                    "hand-offs ran."
                )
            sec.misses.append(miss)
    if peer:
        sp = Stats.of(peer)
        sec.rows.append(
            Row(
                "Hand-off, awsflock 0.2.0 (`release` returns → waiting `acquire` returns)",
                f"median {sp.median:.2f} s, max {sp.max:.2f} s (n={sp.n})",
            )
        )
        ctx.results["handoff_peer"] = sp
        dyn = ctx.results.get("handoff_DynamoDB")

    sec.detail += [
        f"{HANDOFF_TRIALS} trials per store, one after another on one lock name. The holder is "
        "`awsflock run L -- sh -c 'date +%s%N > HELD; sleep 1; date +%s%N > END'`; once HELD "
        "exists and 0.3 s after the holder was started, the waiter "
        "`awsflock run L --wait-time 30 -- sh -c 'date +%s%N > START'` is started. "
        "The hand-off is START − END: from the holder's command ending to the waiter's "
        "command starting, which includes the holder noticing its command's exit and "
        "releasing, the waiter noticing, taking the lock and spawning its command. "
        "DynamoDB, S3 and the local directory ran with `-v`, whose log gives the parts below; "
        "etcd logs no per-request lines. "
        f"While they ran, processes other than moto, etcd and the benchmark used {busy:.0%} "
        "of the machine's CPU time.",
        "",
        "| Store | median | min | max | trials (ms) |",
        "|---|---:|---:|---:|---|",
        *detail_rows,
    ]
    part_rows = []
    for name, trs in results.items():
        parts = [t["parts"] for t in trs if "parts" in t]
        if not parts:
            continue
        med = [statistics.median(p[i] for p in parts) for i in range(5)]
        reqs = {}
        for t in trs:
            for r in t.get("notice_requests", []):
                reqs[r] = reqs.get(r, 0) + 1
        part_rows.append(
            f"| {name} | {ms(med[0])} | {ms(med[1])} | {ms(med[2])} | {ms(med[3])} | "
            f"{ms(med[4])} | {fmt_tally(reqs, len(parts))} |"
        )
    if part_rows:
        sec.detail += [
            "",
            "Where the hand-off goes (medians over the trials; the waiter's requests are "
            "those that ended after the release, up to the grant, per trial):",
            "",
            "| Store | command end → release sent | release request | release done → "
            "waiter's next request | waiter's requests up to the grant | grant → command "
            "start | waiter's requests |",
            "|---|---:|---:|---:|---:|---:|---|",
            *part_rows,
        ]
    if peer:
        sec.detail += [
            "",
            f"awsflock 0.2.0 on DynamoDB (same moto), {len(peer)} "
            f"trial{'s' if len(peer) != 1 else ''}: the holder runs "
            "`acquire L`, holds 10 s and runs `release L ID`; a waiter `acquire L "
            "--wait-time 60` is started just after the holder's acquire returned. The hand-off "
            "is the waiter's `acquire` returning minus the holder's `release` returning: "
            + ", ".join(f"{x:.2f} s" for x in peer)
            + f" (median {Stats.of(peer).median:.2f} s). 0.2.0 retries after 1, 2, 4, 8 … s, "
            "so a waiter that started with the hold sleeps from its try at 7 s to its try at "
            "15 s, about 5 s past a release at 10 s."
            + (
                f" Other processes used {peer_others:.0%} of the CPU time meanwhile."
                if peer_others is not None
                else ""
            ),
        ]
        if dyn is not None:
            sec.detail.append("")
            sec.detail.append(
                f"On the same table, awsflock's DynamoDB hand-off median is {ms(dyn.median)}, "
                f"{Stats.of(peer).median / dyn.median:.0f} times shorter."
            )
    return sec


def contention_run(ctx, name, backend, count):
    """WORKERS workers, each running PER_WORKER sections on one lock in
    sequence, all at once. Returns a dict of figures."""
    lock = ctx.lock("contend")
    run(ctx.run_on(backend, lock, "true"))  # first use creates the item
    argv = ctx.run_on(
        backend, lock, "sh", "-c", "date +%s%N; date +%s%N",
        verbose=count, quiet=True, extra=["--wait-time", "0"],
    )
    # What an uncontended acquisition of this lock sends, to tell the
    # sections that took the lock at their first attempt from those that
    # waited.
    base = None
    if count:
        _, cp = run(argv)
        cs = int(cp.stdout.split()[0]) / 1e9
        base = [r["op"] for r in store_lines(cp.stderr) if r["end"] is not None and r["end"] <= cs]
    records, errors = [], []
    guard = threading.Lock()

    def worker(w):
        for _ in range(PER_WORKER):
            t = time.time_ns() / 1e9
            cp = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
            if cp.returncode != 0:
                with guard:
                    errors.append(f"exit {cp.returncode}: {cp.stderr.strip()[-300:]}")
                continue
            stamps = [int(x) / 1e9 for x in cp.stdout.split() if x.isdigit()]
            lines = store_lines(cp.stderr) if count else []
            cs = stamps[0]
            acq = [r for r in lines if r["end"] is not None and r["end"] <= cs]
            with guard:
                records.append(
                    {"w": w, "spawn": t, "cs": cs, "ce": stamps[-1], "lines": lines, "acq": acq}
                )

    before = etcd_grpc(ctx) if name == "etcd" else None
    others = Others(ctx)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(WORKERS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    busy = others.share()
    after = etcd_grpc(ctx) if name == "etcd" else None
    if errors:
        raise RuntimeError(f"contention on {backend}: {len(errors)} runs failed: {errors[0]}")
    n = len(records)
    waits = [r["cs"] - r["spawn"] for r in records]
    waits_sorted = sorted(waits)
    p90 = waits_sorted[max(0, -(-9 * n // 10) - 1)]
    by_start = sorted(records, key=lambda r: r["cs"])
    overlaps = sum(1 for a, b in zip(by_start, by_start[1:]) if b["cs"] < a["ce"])
    # Sections that followed one of the same worker: the worker's next run
    # took the lock again before anyone else.
    repeats = sum(1 for a, b in zip(by_start, by_start[1:]) if a["w"] == b["w"])
    out = {
        "n": n,
        "wall": wall,
        "rate": n / wall,
        "wait_mean": statistics.mean(waits),
        "wait_median": statistics.median(waits),
        "wait_max": max(waits),
        "wait_p90": p90,
        "repeats": repeats,
        "overlaps": overlaps,
        "busy": busy,
    }
    if count:
        first = [r for r in records if [x["op"] for x in r["acq"]] == base
                 and all(x["outcome"] == "ok" for x in r["acq"])]
        rest = [r for r in records if not any(r is f for f in first)]
        waited = [r["cs"] - r["spawn"] for r in rest]
        out["waited_acq"] = statistics.mean(len(r["acq"]) for r in rest) if rest else 0.0
        out["waited_acq_max"] = max((len(r["acq"]) for r in rest), default=0)
        out["first_try"] = len(first)
        out["base"] = base
        out["waited_mean"] = statistics.mean(waited) if waited else 0.0
        out["first_mean"] = statistics.mean(r["cs"] - r["spawn"] for r in first) if first else 0.0
        all_lines = [x for r in records for x in r["lines"]]
        acq_lines = [x for r in records for x in r["acq"]]
        out["requests"] = len(all_lines) / n
        out["acq_requests"] = len(acq_lines) / n
        out["rel_requests"] = (len(all_lines) - len(acq_lines)) / n
        out["acq_ops"] = tally(acq_lines, op_outcome)
        # Requests a waiter sends per minute of waiting: every acquisition
        # request over the minutes all sections spent waiting.
        wait_minutes = sum(waits) / 60
        out["per_waiter_minute"] = len(acq_lines) / wait_minutes if wait_minutes else 0.0
    if before is not None:
        calls, msgs = etcd_diff(before, after)
        out["grpc_calls"] = sum(calls.values()) / n
        out["grpc_ops"] = calls
        out["grpc_msgs"] = msgs
    return out


def section_contention(ctx):
    """Contention: WORKERS workers x PER_WORKER short sections on one lock."""
    sec = Section("Contention")
    total = WORKERS * PER_WORKER
    rows = []
    for name in ("DynamoDB", "S3", "etcd"):
        count = name != "etcd"
        r = contention_run(ctx, name, ctx.backends[name], count)
        ctx.results[f"contention_{name}"] = r
        log(
            f"  contention {name}: {r['wall']:.1f} s, {r['rate']:.1f}/s, "
            f"wait mean {ms(r['wait_mean'])} max {ms(r['wait_max'])}"
            + (f", {r['requests']:.2f} req/section" if count else "")
        )
        sec.rows.append(
            Row(
                f"Contention, {name}: {WORKERS} workers × {PER_WORKER} sections",
                f"{r['wall']:.1f} s, {r['rate']:.1f} sections/s, wait mean {ms(r['wait_mean'])}, "
                f"max {ms(r['wait_max'])}; {r['repeats']} of {r['n'] - 1} hand-overs to the "
                "worker that had just released"
                + (
                    f"; {r['per_waiter_minute']:.0f} requests per waiter-minute"
                    if "per_waiter_minute" in r
                    else ""
                ),
                "no overlap",
                r["overlaps"] == 0,
            )
        )
        if count:
            met = r["requests"] <= 10
            sec.rows.append(
                Row(
                    f"Contention, {name}: store requests per section",
                    f"{r['requests']:.2f} ({r['acq_requests']:.2f} to acquire + "
                    f"{r['rel_requests']:.2f} to release)",
                    f"≤ 10 with {WORKERS} waiters",
                    met,
                )
            )
            if not met:
                sec.misses.append(
                    f"Contention on {name}: {r['requests']:.2f} store requests per section "
                    f"({r['acq_requests']:.2f} to acquire: {fmt_tally(r['acq_ops'], r['n'])} per "
                    f"section), above 10. Each waiter reads the lock every 100–300 ms while it "
                    f"waits, and a section waited {ms(r['wait_mean'])} on average, so "
                    f"about {r['wait_mean'] / 0.2:.1f} polls per section come from the wait "
                    "alone."
                    + (
                        f" Other processes used {r['busy']:.0%} of the CPU time meanwhile."
                        if r["busy"] >= 0.10
                        else ""
                    )
                )
        else:
            if "grpc_calls" in r:
                sec.rows.append(
                    Row(
                        f"Contention, {name}: gRPC calls per section (etcd's own counters)",
                        f"{r['grpc_calls']:.2f} ({fmt_tally(r['grpc_ops'], r['n'])})",
                    )
                )
            else:
                sec.rows.append(
                    Row(f"Contention, {name}: requests per section", "not counted (watch-based)")
                )
        if r["overlaps"]:
            sec.misses.append(
                f"Contention on {name}: {r['overlaps']} sections started before the previous "
                "one had ended (two holders at once)."
            )
        rows.append((name, r))

    sec.detail += [
        f"{WORKERS} workers run at once, each running "
        f"`awsflock -q run L --wait-time 0 -- sh -c 'date +%s%N; date +%s%N'` "
        f"{PER_WORKER} times in sequence ({total} sections on one lock per store; "
        "`--wait-time 0` waits as long as it takes). A section's wait is from the worker "
        "spawning `awsflock` to the command's first timestamp; the two timestamps of every "
        "section are also checked for overlap with the others. DynamoDB and S3 ran with `-v` "
        "and every `store_request` line (one per HTTP attempt) was counted; a run's requests "
        "that ended before its command started are its acquisition, the rest its release. "
        "etcd logs no per-request lines; its figure is the difference in the server's "
        "`grpc_server_started_total` counters (unary calls and streams opened) over the run.",
        "",
        "| Store | wall | sections/s | wait mean | wait median | wait p90 | wait max | requests per section | of which to acquire | overlaps | other processes' CPU share |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        req = f"{r['requests']:.2f}" if "requests" in r else (
            f"{r['grpc_calls']:.2f} gRPC calls" if "grpc_calls" in r else "not counted (watch-based)"
        )
        acq = f"{r['acq_requests']:.2f}" if "acq_requests" in r else "—"
        sec.detail.append(
            f"| {name} | {r['wall']:.1f} s | {r['rate']:.1f} | {ms(r['wait_mean'])} | "
            f"{ms(r['wait_median'])} | {ms(r['wait_p90'])} | {ms(r['wait_max'])} | {req} | {acq} | {r['overlaps']} | "
            f"{r['busy']:.0%} |"
        )
    sec.detail.append("")
    sec.detail.append(
        "The ≤ 10 target is for the polling stores (DynamoDB and S3), where every read of a "
        "held lock is a billed request. etcd's figure is for reference: a waiter there "
        "queues a key and watches the one ahead of it instead of polling, so its calls do "
        "not grow with the wait; each `run` is a new process that grants a lease (a second, "
        "short one while queued), writes its key in a transaction, reads the queue, watches "
        "while it waits and revokes its lease to release."
    )
    sec.detail.append("")
    for name, r in rows:
        if "first_try" not in r:
            sec.detail.append(
                f"On {name}, {r['repeats']} of the {r['n'] - 1} hand-overs went to the worker "
                "that had just released: a new `run` queues behind those already waiting, so "
                "waits are spread evenly."
            )
            sec.detail.append("")
            continue
        in_turn = r["repeats"] <= max(1, (r["n"] - 1) // 10)
        sec.detail.append(
            f"On {name}, {r['repeats']} of the {r['n'] - 1} hand-overs went to the worker that "
            "had just released"
            + (
                ": waiters queue in the order they came (a worker that asks again goes to the "
                "back), so waits are spread evenly"
                if in_turn
                else ": its next `run` starts at once and took the lock before the waiters"
            )
            + f". {r['first_try']} of {r['n']} sections took the lock with exactly the "
            f"requests of an uncontended acquisition ({' + '.join(r['base'])}); the "
            f"{r['n'] - r['first_try']} others waited {ms(r['waited_mean'])} on average and "
            f"up to {ms(r['wait_max'])}, and sent {r['waited_acq']:.1f} requests each to "
            f"acquire (at most {r['waited_acq_max']}): {r['per_waiter_minute']:.0f} requests "
            "per minute of waiting, over all waiters (the head of the queue reads every "
            "100–300 ms, the rest every 1–2 s, and each writes its place about every 7.5 s)."
        )
        sec.detail.append("")
    for name, r in rows:
        if "acq_ops" in r:
            sec.detail.append(
                f"- {name}, requests to acquire per section: {fmt_tally(r['acq_ops'], r['n'])}"
            )
        if "grpc_ops" in r:
            sec.detail.append(
                f"- {name}, gRPC calls per section: {fmt_tally(r['grpc_ops'], r['n'])}"
                + (
                    f"; messages on streams per section: {fmt_tally(r['grpc_msgs'], r['n'])}"
                    if r["grpc_msgs"]
                    else ""
                )
            )
    return sec


# On-demand prices (us-east-1): DynamoDB per request unit, S3 Standard per request.
PRICE_WRU = 0.625 / 1e6
PRICE_RRU = 0.125 / 1e6
PRICE_S3_PUT = 0.005 / 1000
PRICE_S3_GET = 0.0004 / 1000
DYNAMO_READS = {"GetItem": 1, "Query": 1, "Scan": 1}
DYNAMO_WRITES = {"PutItem": 1, "UpdateItem": 1, "DeleteItem": 1, "TransactWriteItems": 2}
S3_PUT_CLASS = {"PutObject", "CopyObject", "ListObjectsV2", "ListObjects", "CreateBucket"}
S3_GET_CLASS = {"GetObject", "HeadObject"}


def price(store, lines):
    """(dollars, description) for a list of request lines at on-demand prices."""
    ops = tally(lines)
    if store == "DynamoDB":
        rru = sum(n * DYNAMO_READS.get(op, 0) for op, n in ops.items())
        wru = sum(n * DYNAMO_WRITES.get(op, 0) for op, n in ops.items())
        return rru * PRICE_RRU + wru * PRICE_WRU, (rru, wru)
    put = sum(n for op, n in ops.items() if op in S3_PUT_CLASS)
    get = sum(n for op, n in ops.items() if op in S3_GET_CLASS)
    return put * PRICE_S3_PUT + get * PRICE_S3_GET, (get, put)


def dollars(x):
    return f"${x:.6f}" if x < 0.01 else f"${x:.4f}"


def section_cost(ctx):
    """Requests (and dollars) per minute while holding and while waiting."""
    sec = Section("Cost of holding and waiting")
    q = shlex.quote
    procs = {}
    for name in ("DynamoDB", "S3"):
        d = ctx.scratch("cost")
        lock = ctx.lock("cost")
        backend = ctx.backends[name]
        run(ctx.run_on(backend, lock, "true"))  # first use creates the item
        held, end = os.path.join(d, "HELD"), os.path.join(d, "END")
        hlog, wlog = os.path.join(d, "holder.log"), os.path.join(d, "waiter.log")
        hf = open(hlog, "w")
        holder = subprocess.Popen(
            ctx.run_on(
                backend, lock, "sh", "-c",
                f"date +%s%N > {q(held)}; sleep {HOLD_SECONDS}; date +%s%N > {q(end)}",
                verbose=True, quiet=True, extra=["--lease-duration", "60"],
            ),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=hf,
        )
        procs[name] = dict(d=d, lock=lock, backend=backend, held=held, end=end, hlog=hlog,
                           wlog=wlog, hf=hf, holder=holder)
    try:
        for name, p in procs.items():
            wait_for_file(p["held"], p["holder"], 30, f"the {name} holder")
        for name, p in procs.items():
            p["wf"] = open(p["wlog"], "w")
            p["w0"] = time.perf_counter()
            p["waiter"] = subprocess.Popen(
                ctx.run_on(p["backend"], p["lock"], "true", verbose=True, quiet=True,
                           extra=["--wait-time", str(WAIT_SECONDS)]),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=p["wf"],
            )
        for name, p in procs.items():
            rc = p["waiter"].wait(WAIT_SECONDS + 60)
            p["wwall"] = time.perf_counter() - p["w0"]
            p["wf"].close()
            if rc != 3:
                raise RuntimeError(f"the {name} waiter exited {rc}, expected 3 (not acquired)")
        for name, p in procs.items():
            rc = p["holder"].wait(HOLD_SECONDS + 60)
            p["hf"].close()
            if rc != 0:
                with open(p["hlog"]) as f:
                    raise RuntimeError(f"the {name} holder exited {rc}: {f.read()[-500:]}")
    finally:
        for p in procs.values():
            for k in ("holder", "waiter"):
                if k in p and p[k].poll() is None:
                    p[k].kill()
                    p[k].wait()

    sec.detail += [
        f"For DynamoDB and S3 at once: a holder `awsflock -v run L --lease-duration 60 -- "
        f"sleep {HOLD_SECONDS}` (renewing every 20 s, a third of the lease) and, once it held "
        f"the lock, a waiter `awsflock -v run L --wait-time {WAIT_SECONDS} -- true` on the "
        f"same lock, which gave up after {WAIT_SECONDS} s (exit 3). Requests are the "
        "`store_request` lines; the holder's are those that ended while its command ran "
        "(its renewals: acquisition and release excluded). Per minute = count ÷ time × 60. "
        "Dollars at on-demand prices: DynamoDB $0.625 per million write request units and "
        "$0.125 per million read request units (a renewal UpdateItem of an item under 1 KB "
        "is 1 WRU, a strongly consistent GetItem under 4 KB 1 RRU; a conditional write that "
        "fails is charged too); S3 Standard $0.005 per 1,000 PUT-class and $0.0004 per "
        "1,000 GET-class requests.",
        "",
        "| Store | state | requests counted | over | per minute | kinds | cost per hour |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for name, p in procs.items():
        with open(p["hlog"]) as f:
            hl = store_lines(f.read())
        with open(p["wlog"]) as f:
            wl = store_lines(f.read())
        t_held, t_end = read_ns(p["held"]), read_ns(p["end"])
        holding = [r for r in hl if r["end"] is not None and t_held <= r["end"] <= t_end]
        span = t_end - t_held
        hold_pm = len(holding) / span * 60
        hold_cost, _ = price(name, holding)
        hold_cost_h = hold_cost / span * 3600
        wspan = p["wwall"]
        wait_pm = len(wl) / wspan * 60
        wait_cost, _ = price(name, wl)
        wait_cost_h = wait_cost / wspan * 3600
        ctx.results[f"cost_{name}"] = (hold_pm, hold_cost_h, wait_pm, wait_cost_h)
        sec.rows += [
            Row(
                f"Holding, {name}: requests per minute (`--lease-duration 60`)",
                f"{hold_pm:.1f} ({fmt_tally(tally(holding))} in {span:.0f} s), "
                f"{dollars(hold_cost_h)} per hour",
            ),
            Row(
                f"Waiting, {name}: requests per minute (one waiter)",
                f"{wait_pm:.0f} ({len(wl)} in {wspan:.0f} s), {dollars(wait_cost_h)} per hour",
            ),
        ]
        sec.detail += [
            f"| {name} | holding | {len(holding)} | {span:.1f} s | {hold_pm:.1f} | "
            f"{fmt_tally(tally(holding, op_outcome))} | {dollars(hold_cost_h)} |",
            f"| {name} | waiting | {len(wl)} | {wspan:.1f} s | {wait_pm:.1f} | "
            f"{fmt_tally(tally(wl, op_outcome))} | {dollars(wait_cost_h)} |",
        ]
    dh = ctx.results["cost_DynamoDB"]
    sec.detail += [
        "",
        f"A DynamoDB lock held for a day costs {dollars(dh[1] * 24)}; a waiter polling it "
        f"for a day costs {dollars(dh[3] * 24)}.",
    ]
    return sec

SHARE_SECTIONS = int(os.environ.get("BENCH_SHARE_SECTIONS", "8"))


def sharing_run(ctx, backend, workers):
    """Runs `workers` = [(kind, flags, hold_seconds)] at once, each running
    SHARE_SECTIONS sections in sequence on one lock; returns the sections
    as dicts (worker, kind, spawn, start, end)."""
    lock = ctx.lock("share")
    records, errors = [], []
    guard = threading.Lock()

    def worker(w, kind, flags, hold):
        argv = ctx.run_on(
            backend, lock, "sh", "-c", f"date +%s%N; sleep {hold}; date +%s%N",
            quiet=True, extra=["--wait-time", "0", *flags],
        )
        for _ in range(SHARE_SECTIONS):
            t = time.time_ns() / 1e9
            cp = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
            if cp.returncode != 0:
                with guard:
                    errors.append(f"exit {cp.returncode}: {cp.stderr.strip()[-300:]}")
                continue
            stamps = [int(x) / 1e9 for x in cp.stdout.split() if x.isdigit()]
            with guard:
                records.append(
                    {"w": w, "kind": kind, "spawn": t, "start": stamps[0], "end": stamps[-1]}
                )

    threads = [
        threading.Thread(target=worker, args=(w, kind, flags, hold))
        for w, (kind, flags, hold) in enumerate(workers)
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise RuntimeError(f"sharing on {backend}: {len(errors)} runs failed: {errors[0]}")
    return records


def concurrency(records):
    """(most at once, seconds at each level) over the span of `records`."""
    events = sorted([(r["start"], 1) for r in records] + [(r["end"], -1) for r in records])
    level, most, at = 0, 0, {}
    last = events[0][0]
    for t, d in events:
        at[level] = at.get(level, 0.0) + (t - last)
        last = t
        level += d
        most = max(most, level)
    return most, at


def section_sharing(ctx):
    """Semaphores and shared locks: concurrency and waits."""
    sec = Section("Semaphores and shared locks")
    rows = []
    for name in ("DynamoDB", "S3", "etcd"):
        backend = ctx.backends[name]
        try:
            sem = sharing_run(ctx, backend, [("s", ["--max-holders", "3"], 1.0)] * 9)
            rw = sharing_run(
                ctx, backend,
                [("r", ["--shared"], 1.0)] * 6 + [("w", [], 0.3)] * 2,
            )
        except RuntimeError as e:
            log(f"  sharing {name}: {e}")
            sec.rows.append(Row(f"Semaphore and shared lock, {name}", f"failed: {e}"[:200]))
            continue
        most, at = concurrency(sem)
        span = sum(at.values())
        at3 = at.get(3, 0.0) / span if span else 0.0
        readers = [r for r in rw if r["kind"] == "r"]
        writers = [r for r in rw if r["kind"] == "w"]
        r_most, _ = concurrency(readers)
        w_overlaps = sum(
            1 for w in writers for o in rw
            if o is not w and o["start"] < w["end"] and w["start"] < o["end"]
        )
        w_wait = max(w["start"] - w["spawn"] for w in writers)
        r_wait = max(r["start"] - r["spawn"] for r in readers)
        log(
            f"  sharing {name}: semaphore most {most}, at 3 {at3:.0%}; readers at once "
            f"{r_most}, writer overlaps {w_overlaps}, longest writer wait {ms(w_wait)}"
        )
        rows.append((name, most, at3, r_most, w_overlaps, w_wait, r_wait, len(sem), len(rw)))
        sec.rows += [
            Row(
                f"Semaphore of 3, {name}: 9 workers × {SHARE_SECTIONS} sections",
                f"at most {most} at once; 3 at once {at3:.0%} of the time",
                "never above 3, at 3 most of the time",
                most <= 3 and at3 >= 0.5,
            ),
            Row(
                f"Shared lock, {name}: 6 readers and 2 writers × {SHARE_SECTIONS} sections",
                f"up to {r_most} readers at once; {w_overlaps} writer overlaps; longest "
                f"writer wait {ms(w_wait)} (longest reader wait {ms(r_wait)})",
                "readers overlap, a writer overlaps nobody",
                r_most >= 2 and w_overlaps == 0,
            ),
        ]
        if most > 3 or w_overlaps:
            sec.misses.append(
                f"{name}: {most} semaphore holders at once, {w_overlaps} writer overlaps."
            )
    sec.detail += [
        f"Semaphore: 9 workers at once, each running `awsflock -q run L --max-holders 3 "
        f"--wait-time 0 -- sh -c 'date +%s%N; sleep 1; date +%s%N'` {SHARE_SECTIONS} times "
        "in sequence; the sections' timestamps give how many ran at once, and for what share "
        "of the run's span. Shared: 6 workers run the same with `--shared` (1 s each) and 2 "
        "with no flag (exclusive, 0.3 s each); a wait is from spawning `awsflock` to the "
        "command's first timestamp.",
        "",
        "| Store | semaphore: most at once | share of time at 3 | readers at once | writer overlaps | longest writer wait | longest reader wait |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, most, at3, r_most, w_ov, w_wait, r_wait, _, _ in rows:
        sec.detail.append(
            f"| {name} | {most} | {at3:.0%} | {r_most} | {w_ov} | {ms(w_wait)} | {ms(r_wait)} |"
        )
    sec.detail.append("")
    return sec



SECTIONS = [
    section_cycle,
    section_requests,
    section_handoff,
    section_contention,
    section_sharing,
    section_cost,
    section_footprint,
    section_limit,
]


# --------------------------------------------------------------------------
# Report


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def machine(ctx):
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return [
        f"- CPUs (nproc): {len(os.sched_getaffinity(0))}",
        f"- CPU model: {model}",
        f"- Memory: {mem}",
        f"- Kernel: {platform.system()} {platform.release()} ({platform.machine()})",
        f"- 1-minute load average: {ctx.results['load_start']:.2f} when the run began, "
        f"{ctx.results['load_end']:.2f} when it ended (moto, etcd and the benchmark included)",
    ]


def versions(ctx):
    def out(argv, env=None):
        try:
            return subprocess.run(argv, capture_output=True, text=True, env=env).stdout.strip()
        except OSError as e:
            return f"unavailable ({e})"

    try:
        with urllib.request.urlopen(f"http://{ctx.etcd}/version", timeout=5) as f:
            etcd_version = json.load(f).get("etcdserver", "unknown") + " (one member)"
    except (OSError, ValueError) as e:
        etcd_version = f"unknown ({e})"
    peer_python = os.path.join(os.path.dirname(ctx.peer), "python")
    peer_version = out(
        [peer_python, "-c", "import importlib.metadata as m; print(m.version('awsflock'))"]
    )
    return [
        f"- {out(['rustc', '--version'])}",
        f"- {out([ctx.ours, '--version'])} (release build, `{os.path.relpath(ctx.ours)}`)",
        f"- moto {importlib.metadata.version('moto')} (through `scripts/moto-server.py`), "
        f"boto3 {importlib.metadata.version('boto3')}, Python {platform.python_version()}",
        f"- etcd {etcd_version}",
        f"- awsflock (Python) {peer_version}",
    ]


def main():
    ctx = Ctx()
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.perf_counter()
    ctx.results["load_start"] = loadavg()
    # One table, one bucket and one directory for all sections, created by
    # our binary.
    run(ctx.ours_cmd("table-create"))
    run([ctx.ours, "table-create", "--backend", ctx.backends["S3"]])
    run([ctx.ours, "table-create", "--backend", ctx.backends["local directory"]])
    sections = []
    # BENCH_ONLY=handoff,contention measures only those sections (names
    # after `section_`), for a quick look; write such a partial report
    # elsewhere (BENCH_OUT), not over BENCHMARKS.md.
    only = [x for x in os.environ.get("BENCH_ONLY", "").split(",") if x]
    for fn in SECTIONS:
        if only and fn.__name__.removeprefix("section_") not in only:
            continue
        log(f"{fn.__name__}: {fn.__doc__.strip().splitlines()[0]}")
        s0 = time.perf_counter()
        sections.append(fn(ctx))
        log(f"{fn.__name__}: done in {time.perf_counter() - s0:.1f} s")
    ctx.results["load_end"] = loadavg()
    for s in sections:
        if s.finish is not None:
            s.finish(ctx)
    took = time.perf_counter() - t0

    lines = [
        "# Benchmarks",
        "",
        "Generated by `scripts/bench.sh`; do not edit by hand. Every figure below was "
        "measured in one run against a local moto server (DynamoDB and S3) and a local "
        "single-member etcd on 127.0.0.1, so the ratios compare like with like. moto is "
        "far slower than DynamoDB per request on some paths and faster on others (no "
        "network), so absolute times say more about awsflock's own overhead than about "
        "production latency.",
        "",
        "moto runs through `scripts/moto-server.py`, which handles one request at a time: "
        "stock moto handles requests on threads without locking, so two concurrent "
        "conditional writes to one item can both succeed, which DynamoDB and S3 never allow.",
        "",
        f"Run on {started.strftime('%Y-%m-%d %H:%M UTC')}, taking {took:.0f} s.",
        "",
        "## Machine",
        "",
        *machine(ctx),
        "",
        "## Versions",
        "",
        *versions(ctx),
        "",
        "## Summary",
        "",
        "| Figure | Measured | Target | Met |",
        "|---|---|---|---|",
    ]
    for s in sections:
        for r in s.rows:
            lines.append(f"| {r.figure} | {r.measured} | {r.target} | {mark(r.met)} |")
    misses = [m for s in sections for m in s.misses]
    lines += ["", "## Missed targets", ""]
    if misses:
        lines += [f"- {m}" for m in misses]
    else:
        lines.append("None: every target was met in this run.")
    for s in sections:
        lines += ["", f"## {s.title}", "", *s.detail]
    lines.append("")

    out = os.environ.get("BENCH_OUT", "BENCHMARKS.md")
    # Sections measured apart, carried over from the report being replaced:
    # "Crowd on one lock" (scripts/bench/crowd.sh, about 20 minutes), "Crowd
    # of 1,000, simulated" (scripts/bench/crowd-sim.sh) and
    # "Dependencies" (clean release builds take minutes each; the section
    # says how).
    try:
        with open(out) as f:
            old = f.read()
        for title in (
            "Crowd on one lock",
            "Crowd on one lock, before the waiting line",
            "Crowd of 1,000, simulated",
            "Dependencies",
        ):
            i = old.find(f"\n## {title}\n")
            if i >= 0:
                j = old.find("\n## ", i + 1)
                kept = old[i + 1 : j if j >= 0 else len(old)].rstrip("\n")
                lines += kept.split("\n") + [""]
    except OSError:
        pass
    with open(out, "w") as f:
        f.write("\n".join(lines))
    log(f"wrote {out}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
