"""Crowd on one lock: N waiters behind one holder, counted at the server.

Run through scripts/bench/crowd.sh, which builds the release binary, starts
moto through scripts/bench/moto-counting.py (scripts/moto-server.py's
serialised moto, logging every request) and sets:

    CROWD_AWSFLOCK   path of the release binary
    CROWD_REQLOG     moto's request log (one JSON line per request)
    CROWD_MOTO_PID   the moto server, whose CPU time is measured apart
    CROWD_TABLE      a fresh table name (created here)
    CROWD_BUCKET     a fresh S3 bucket name (created here)
    CROWD_WORK       a scratch directory, removed afterwards
    BENCH_OUT        the report whose "Crowd on one lock" section is replaced
    CROWD_HOLD       seconds the holders hold (default 20)
    CROWD_EXAMPLE    path of the release build of examples/crowd.rs
    CROWD_SIZES      crowd sizes, comma-separated (default 1,10,100,1000)
    CROWD_PROCESS_MAX  larger crowds are tasks in one process, examples/crowd.rs
                     (default 100)
    CROWD_SLOTS      the semaphore's --max-holders (default 10)
    CROWD_BUDGET     seconds a run may take from the crowd's start, also the
                     waiters' --wait-time (default 150)
    CROWD_BUDGET_LARGE  the same for crowds of tasks (default 60)
    CROWD_STORES     stores to measure (default DynamoDB,S3)
    CROWD_JSON       if set, every run's figures are also written there

One run: SLOTS holders (1 for the lock) take the name, each running a
command that stamps its start, sleeps CROWD_HOLD and stamps its end; once
all hold, N processes `awsflock -q run NAME --wait-time BUDGET -- CMD` start
at once, CMD stamping its start and end in the same file (above
CROWD_PROCESS_MAX, one examples/crowd.rs process with N tasks, each
stamping when it holds and releasing at once: a 2-CPU machine cannot run a
thousand supervisors). moto's log gives
every request's operation, outcome and item sizes.
"""

import datetime
import json
import math
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
import uuid

HOLD = float(os.environ.get("CROWD_HOLD", "20"))
SIZES = [int(x) for x in os.environ.get("CROWD_SIZES", "1,10,100,1000").split(",") if x]
# Larger crowds run as tasks in one process (examples/crowd.rs).
PROCESS_MAX = int(os.environ.get("CROWD_PROCESS_MAX", "100"))
SLOTS = int(os.environ.get("CROWD_SLOTS", "10"))
BUDGET = float(os.environ.get("CROWD_BUDGET", "150"))
# Crowds run as tasks (above PROCESS_MAX) get their own, shorter budget.
BUDGET_LARGE = float(os.environ.get("CROWD_BUDGET_LARGE", "60"))
STORES = [s for s in os.environ.get("CROWD_STORES", "DynamoDB,S3").split(",") if s]
CLK_TCK = os.sysconf("SC_CLK_TCK")
TITLE = "Crowd on one lock"

# Prices used (on-demand, us-east-1 list prices as given for this figure):
# DynamoDB per request unit, S3 Standard per request.
PRICE_WRU = 1.25 / 1e6
PRICE_RRU = 0.25 / 1e6
PRICE_S3_PUT = 0.005 / 1000  # PUT, COPY, POST, LIST
PRICE_S3_GET = 0.0004 / 1000  # GET, HEAD
DYNAMO_READS = {"GetItem", "Query", "Scan", "BatchGetItem"}
DYNAMO_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems"}
S3_READS = {"GetObject", "HeadObject"}
S3_LISTS = {"ListObjectsV2", "ListObjects"}
S3_WRITES = {"PutObject", "CopyObject", "DeleteObject"}


def log(msg):
    print(f"crowd: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Machine


def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def cpu_busy():
    """Seconds of CPU used on the whole machine since boot (all CPUs)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / CLK_TCK


def cpu_of(pid):
    """User + system CPU seconds of a live process (0 if gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def cpu_self():
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        total += ru.ru_utime + ru.ru_stime
    return total


class Cpu:
    """CPU shares over a stretch: moto's (of one CPU) and other processes'
    (of the whole machine: neither moto, this script nor its children)."""

    def __init__(self, moto_pid):
        self.pid = moto_pid
        self.t0 = time.time()
        self.busy0, self.moto0, self.self0 = cpu_busy(), cpu_of(moto_pid), cpu_self()

    def shares(self):
        wall = time.time() - self.t0
        moto = cpu_of(self.pid) - self.moto0
        ours = cpu_self() - self.self0
        busy = cpu_busy() - self.busy0
        ncpu = len(os.sched_getaffinity(0))
        return moto / wall, max(0.0, busy - moto - ours) / (wall * ncpu)


# --------------------------------------------------------------------------
# One run


class Ctx:
    def __init__(self):
        self.bin = os.environ["CROWD_AWSFLOCK"]
        self.example = os.environ["CROWD_EXAMPLE"]
        self.reqlog = os.environ["CROWD_REQLOG"]
        self.moto_pid = int(os.environ["CROWD_MOTO_PID"])
        self.work = os.environ["CROWD_WORK"]
        self.prefix = "crowd-" + uuid.uuid4().hex[:8]
        self.backends = {
            "DynamoDB": f"dynamodb://{os.environ['CROWD_TABLE']}",
            "S3": f"s3://{os.environ['CROWD_BUCKET']}/crowd/",
        }

    def argv(self, backend, lock, slots, cmd, extra=()):
        sem = ["--max-holders", str(slots)] if slots > 1 else []
        return [self.bin, "-q", "run", lock, "--backend", backend, *sem, *extra, "--", *cmd]


def stamp_cmd(stamps, who, hold=0.0):
    """sh -c: append "s NS WHO", sleep, append "e NS WHO" to stamps."""
    q = shlex.quote
    sleep = f"sleep {hold:g}; " if hold else ""
    return [
        "sh", "-c",
        f'echo "s $(date +%s%N) {who}" >> {q(stamps)}; {sleep}'
        f'echo "e $(date +%s%N) {who}" >> {q(stamps)}',
    ]


def read_stamps(path):
    """{who: {"s": seconds, "e": seconds}}."""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                kind, ns, who = line.split()
                out.setdefault(who, {})[kind] = int(ns) / 1e9
    except FileNotFoundError:
        pass
    return out


def wait_started(stamps, whos, procs, timeout):
    deadline = time.time() + timeout
    while True:
        seen = read_stamps(stamps)
        if all("s" in seen.get(w, {}) for w in whos):
            return
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"a holder exited {p.returncode} before its command started")
        if time.time() > deadline:
            raise RuntimeError(f"the holders did not all start within {timeout:.0f} s")
        time.sleep(0.05)


def reap(procs, deadline):
    """Waits for every process until deadline, then kills the rest (by
    pid, ours). Returns {returncode: count} and the time all had exited."""
    codes = {}
    for p in procs:
        try:
            rc = p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            rc = "killed"
            p.wait()
        codes[rc] = codes.get(rc, 0) + 1
    return codes, time.time()


def crowd_run(ctx, store, slots, n):
    """One holder (SLOTS for a semaphore) holding HOLD s, N waiters behind."""
    budget = BUDGET if n <= PROCESS_MAX else BUDGET_LARGE
    kind = "lock" if slots == 1 else f"semaphore of {slots}"
    lock = f"{ctx.prefix}-{store.lower()}-{slots}-{n}"
    backend = ctx.backends[store]
    d = os.path.join(ctx.work, lock)
    os.makedirs(d)
    stamps, errs = os.path.join(d, "stamps"), open(os.path.join(d, "stderr"), "w")
    quiesce(ctx.reqlog)
    prime(ctx.argv(backend, lock, slots, ["true"]), errs)
    load0 = os.getloadavg()[0]
    cpu = Cpu(ctx.moto_pid)
    offset = os.path.getsize(ctx.reqlog)
    hold_names = [f"h{i}" for i in range(slots)]
    holders = [
        subprocess.Popen(ctx.argv(backend, lock, slots, stamp_cmd(stamps, h, HOLD)),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errs)
        for h in hold_names
    ]
    workers = []
    try:
        wait_started(stamps, hold_names, holders, 60)
        t0 = time.time()
        wait = ["--wait-time", f"{budget:g}s"]
        if n > PROCESS_MAX:
            # One process, N tasks: examples/crowd.rs.
            argv = [ctx.example, backend, lock, str(n), stamps, f"{budget:.0f}"]
            workers.append(subprocess.Popen(argv + ([str(slots)] if slots > 1 else []),
                                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=errs))
        for i in range(n if n <= PROCESS_MAX else 0):
            workers.append(subprocess.Popen(
                ctx.argv(backend, lock, slots, stamp_cmd(stamps, f"w{i}"), wait),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errs))
        t_launched = time.time()
        codes, _ = reap(workers, t0 + budget + 30)
        hcodes, t_done = reap(holders, time.time() + 30)
    finally:
        for p in holders + workers:
            if p.poll() is None:
                p.kill()
                p.wait()
        errs.close()
    moto_share, others_share = cpu.shares()
    st = read_stamps(stamps)
    reqs = read_requests(ctx.reqlog, offset)
    r = dict(store=store, kind=kind, slots=slots, n=n, budget=budget, t0=t0, t_launched=t_launched,
             t_done=t_done, codes=codes, hcodes=hcodes, moto_cpu=moto_share,
             others_cpu=others_share, load0=load0, load1=os.getloadavg()[0])
    r.update(timings(st, hold_names, n, t0))
    r.update(request_figures(store, reqs, t0, t_done, r["held_end"], n))
    r["stderr_tail"] = tail(os.path.join(d, "stderr"))
    log(f"{store} {kind} N={n}: {summary_line(r)}")
    return r


def quiesce(reqlog, quiet=2.0, limit=120.0):
    """Waits until moto has answered everything queued (its log has not
    grown for `quiet` s): a crowd killed at its budget leaves requests
    queued behind moto's one lock, which the next run must not share."""
    deadline = time.time() + limit
    size, since = os.path.getsize(reqlog), time.time()
    while time.time() < deadline and time.time() - since < quiet:
        time.sleep(0.2)
        now = os.path.getsize(reqlog)
        if now != size:
            size, since = now, time.time()


def prime(argv, errs, tries=5):
    """First use of the name (creates its item), retried: moto may still be
    slow after a large crowd."""
    for i in range(tries):
        rc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=errs).returncode
        if rc == 0:
            return
        log(f"priming {argv[3]} exited {rc} (try {i + 1} of {tries})")
        time.sleep(5)
    raise RuntimeError(f"could not take {argv[3]} once, uncontended")


def tail(path, limit=1500):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-limit:]
    except OSError:
        return ""


def read_requests(path, offset):
    out = []
    with open(path) as f:
        f.seek(offset)
        for line in f:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass  # a line being written as we read
    return out


def timings(st, hold_names, n, t0):
    """Hand-offs (k-th waiter's start after the k-th end of any command:
    with every slot taken, each admission follows a slot freed) and drain."""
    hold_ends = sorted(st[h]["e"] for h in hold_names if "e" in st.get(h, {}))
    ends = sorted(v["e"] for v in st.values() if "e" in v)
    starts = sorted(st[f"w{i}"]["s"] for i in range(n) if "s" in st.get(f"w{i}", {}))
    w_ends = [st[f"w{i}"]["e"] for i in range(n) if "e" in st.get(f"w{i}", {})]
    handoffs = [s - e for s, e in zip(starts, ends)]
    held_end = hold_ends[0] if hold_ends else t0 + HOLD
    return dict(
        ran=len(starts),
        handoffs=handoffs,
        handoff_median=statistics.median(handoffs) if handoffs else None,
        handoff_max=max(handoffs) if handoffs else None,
        drain=(max(w_ends) - held_end) if len(w_ends) == n and n else None,
        held_end=held_end,
    )


# --------------------------------------------------------------------------
# Requests, sizes and prices


def units(rec):
    """(read units, write units) of one DynamoDB request: 1 RCU per 4 KB of
    a strongly consistent read (awsflock reads consistently), 1 WCU per KB
    of the larger of the old and new item, twice that in a transaction; a
    refused conditional write is charged as a write of the item as it is."""
    op, items = rec["op"], rec.get("items") or []
    if op in DYNAMO_READS:
        return sum(max(1, math.ceil(max(o or 0, w or 0) / 4096)) for o, w in items), 0
    if op in DYNAMO_WRITES:
        per = 2 if op == "TransactWriteItems" else 1
        return 0, sum(per * max(1, math.ceil(max(o or 0, w or 0) / 1024)) for o, w in items)
    return 0, 0


def sort_of(store, rec):
    """read, write, list, failed (refused conditional write), error or other."""
    if rec.get("cond"):
        return "failed"
    if rec["status"] >= 400:
        return "error"
    op = rec["op"]
    if store == "DynamoDB":
        return "read" if op in DYNAMO_READS else "write" if op in DYNAMO_WRITES else "other"
    if op in S3_READS:
        return "read"
    return "list" if op in S3_LISTS else "write" if op in S3_WRITES else "other"


def largest(store, recs):
    if store == "DynamoDB":
        return max((max(o or 0, w or 0) for r in recs for o, w in r.get("items") or []), default=0)
    return max((r.get("size") or 0 for r in recs), default=0)


def dollars_of(store, recs):
    """Dollars for these requests at the prices above, with (RCU, WCU)."""
    if store == "DynamoDB":
        rcu = wcu = 0
        for r in recs:
            a, b = units(r)
            rcu, wcu = rcu + a, wcu + b
        return rcu * PRICE_RRU + wcu * PRICE_WRU, rcu, wcu
    put = sum(1 for r in recs if r["op"] in S3_WRITES | S3_LISTS and r["op"] != "DeleteObject")
    get = sum(1 for r in recs if r["op"] in S3_READS)
    return put * PRICE_S3_PUT + get * PRICE_S3_GET, 0, 0


def request_figures(store, reqs, t0, t_done, held_end, n):
    key = "dynamodb" if store == "DynamoDB" else "s3"
    mine = [r for r in reqs if r.get("store") == key and t0 <= r["t"] <= t_done]
    held = [r for r in mine if r["t"] <= held_end]
    span, held_span = t_done - t0, max(1e-6, held_end - t0)
    kinds = {}
    for r in held:
        k = sort_of(store, r)
        kinds[k] = kinds.get(k, 0) + 1
    ops = {}
    for r in mine:
        k = r["op"] + (" (refused)" if r.get("cond") else "")
        ops[k] = ops.get(k, 0) + 1
    cost, rcu, wcu = dollars_of(store, held)
    waiter_min = n * held_span / 60
    return dict(
        total=len(mine), span=span, rate_all=len(mine) / span,
        held_count=len(held), held_span=held_span, rate_held=len(held) / held_span,
        per_wm={k: v / waiter_min for k, v in kinds.items()} if n else {},
        per_wm_all=len(held) / waiter_min if n else None,
        failed_all=sum(1 for r in mine if r.get("cond")),
        largest=largest(store, mine), rcu_s=rcu / held_span, wcu_s=wcu / held_span,
        cost_h=cost / held_span * 3600, ops=ops,
    )


# --------------------------------------------------------------------------
# Report


def secs(x):
    if x is None:
        return "—"
    return f"{x * 1e3:.0f} ms" if x < 1 else f"{x:.1f} s"


def per_wm(r):
    w = r["per_wm"]
    sorts = ("read", "write", "failed") if r["store"] == "DynamoDB" else ("read", "list", "write", "failed")
    parts = [f"{w.get(k, 0):.0f} {k}" for k in sorts if k != "list" or w.get(k)]
    if w.get("error"):
        parts.append(f"{w['error']:.0f} other errors")
    return f"{r['per_wm_all']:.0f} ({', '.join(parts)})"


def summary_line(r):
    return (f"{r['rate_held']:.1f} req/s while held, {r['rate_all']:.1f} over {r['span']:.0f} s, "
            f"{r['failed_all']} refused, largest {r['largest']} B, "
            f"hand-off median {secs(r['handoff_median'])}, drain {secs(r['drain'])}, "
            f"ran {r['ran']}/{r['n']}, moto CPU {r['moto_cpu']:.0%}")


def store_table(store, runs):
    lines = [
        f"### {store}",
        "",
        "| holders | N | requests/s while held (whole run) | per waiter-minute (read, write, "
        "failed conditional write) | failed conditional writes, whole run | largest "
        + ("item" if store == "DynamoDB" else "object")
        + " | RCU/s | WCU/s | cost per hour | hand-off median (max) | drain | ran | moto CPU |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        ru = (f"{r['rcu_s']:.1f}", f"{r['wcu_s']:.1f}") if store == "DynamoDB" else ("—", "—")
        ho = "—" if r["handoff_median"] is None else f"{secs(r['handoff_median'])} ({secs(r['handoff_max'])})"
        drain = secs(r["drain"]) if r["drain"] is not None else f"not within {r['budget']:.0f} s"
        lines.append(
            f"| {r['kind']} | {r['n']} | {r['rate_held']:.1f} ({r['rate_all']:.1f} over "
            f"{r['span']:.0f} s) | {per_wm(r) if r['n'] else '—'} | {r['failed_all']} | "
            f"{r['largest']:,} B | {ru[0]} | {ru[1]} | ${r['cost_h']:.4f} | {ho} | {drain} | "
            f"{r['ran']}/{r['n']} | {r['moto_cpu']:.0%} |"
        )
    lines += ["", "Operations over each whole run:", ""]
    for r in runs:
        ops = ", ".join(f"{k} × {v}" for k, v in sorted(r["ops"].items(), key=lambda kv: -kv[1]))
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(r["codes"].items(), key=str))
        lines.append(f"- {r['kind']}, N = {r['n']}: {ops}; waiters' exit codes {codes}; "
                     f"1-minute load {r['load0']:.2f} → {r['load1']:.2f}, other processes "
                     f"{r['others_cpu']:.0%} of the machine")
    return lines + [""]


def section(runs, meta):
    out = [
        f"## {TITLE}",
        "",
        "Generated by `scripts/bench/crowd.sh`, apart from the rest of this file "
        "(`scripts/bench.sh` carries this section over when it rewrites the file). Waiters keep "
        "their places in the waiting line, outside the lock record (DESIGN.md, \"The waiting "
        "line\"); the next section has the figures of the same runs before, when every join "
        "and ticket refresh rewrote the one record.",
        "",
        f"Run on {meta['started']}, taking {meta['took']:.0f} s, release build, one moto "
        "server (through `scripts/bench/moto-counting.py`, which loads "
        "`scripts/moto-server.py`: one request at a time) on 127.0.0.1. The machine "
        f"({len(os.sched_getaffinity(0))} CPUs) is shared with other work and was not idle: "
        f"`uptime` before: `{meta['uptime0']}`; after: `{meta['uptime1']}`. Each run's load "
        "and the CPU share of other processes are listed under its table.",
        "",
        f"A run: one holder (for the semaphore, `--max-holders {SLOTS}` "
        f"and {SLOTS} holders, filling it) runs `awsflock -q run NAME -- sh -c '…; sleep "
        f"{HOLD:g}; …'`; once all hold, N processes `target/release/awsflock -q run NAME "
        f"--wait-time {BUDGET:g}s -- sh -c '…'` start at once, on a name used once before "
        f"(its item exists). Crowds above {PROCESS_MAX} cannot be processes on this "
        "machine: they run as tasks of one process, `target/release/examples/crowd` "
        "(examples/crowd.rs: N tasks on one current-thread tokio runtime sharing one store "
        "client, each acquiring through the library as `run` does and releasing as soon as "
        f"it has stamped), with {BUDGET_LARGE:g} s to wait. "
        "Every command appends its start and end times to one file. "
        "Requests are counted at the server, every client's together: **while held** is "
        "from the crowd's start to the first holder's end (all N waiting; the holders' "
        "renewals are in it, a handful), the **whole run** until every process has exited. "
        "Per waiter-minute = requests while held ÷ (N × that time). A failed conditional "
        "write is one the store refused (DynamoDB ConditionalCheckFailed or a cancelled "
        "transaction, S3 412/409). **Hand-off**: the k-th waiter's command start after the "
        "k-th end of any command (with every slot taken, each admission follows a freed "
        "slot; for the lock, the previous holder's end). **Drain**: the first holder's end "
        "to the last waiter's end.",
        "",
        "Sizes: DynamoDB items by DynamoDB's rule (attribute names plus values, as moto "
        "counts them), read from moto before and after each request; S3 object bytes "
        "written or read. Capacity: 1 RCU per 4 KB of a strongly consistent read, 1 WCU "
        "per KB of the larger of the old and new item (twice in a transaction), a refused "
        "conditional write charged as a write of the item as it stands. Cost per hour at "
        "the rate while held, on-demand prices used here: DynamoDB $1.25 per million write "
        "request units and $0.25 per million read request units; S3 $0.005 per 1,000 "
        "PUT/LIST and $0.0004 per 1,000 GET/HEAD (DELETE free). (The \"Cost of holding and "
        "waiting\" section above prices DynamoDB at $0.625 and $0.125, today's us-east-1 "
        "list price: halve the DynamoDB dollars here to compare.)",
        "",
        "moto serialises every request and its cost grows with the item: its CPU share "
        "(of one CPU) is in the last column; near 100% the request rate is moto's ceiling, "
        "not the clients' demand, and hand-offs include its queue.",
        "",
    ]
    for store in STORES:
        out += store_table(store, [r for r in runs if r["store"] == store])
    out += meta.get("notes", [])
    return out


def splice(path, lines, title=TITLE):
    """Replace (or add, before "Dependencies" or at the end) the section
    `title` (ours by default; scripts/bench/crowd-sim.sh uses it too)."""
    try:
        with open(path) as f:
            old = f.read()
    except FileNotFoundError:
        old = "# Benchmarks\n"
    text = "\n".join(lines).rstrip("\n") + "\n"
    head = f"\n## {title}\n"
    i = old.find(head)
    if i >= 0:
        j = old.find("\n## ", i + 1)
        new = old[: i + 1] + text + (old[j:] if j >= 0 else "")
    else:
        k = old.find("\n## Dependencies\n")
        new = (old[: k + 1] + text + old[k:]) if k >= 0 else old.rstrip("\n") + "\n\n" + text
    with open(path, "w") as f:
        f.write(new)


def main():
    ctx = Ctx()
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.time()
    meta = {"uptime0": uptime(), "started": started.strftime("%Y-%m-%d %H:%M UTC")}
    log(f"uptime before: {meta['uptime0']}")
    for store in STORES:
        subprocess.run([ctx.bin, "table-create", "--backend", ctx.backends[store]], check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    runs = []
    keep = os.environ.get("CROWD_JSON")
    for store in STORES:
        for slots in (1, SLOTS):
            for n in SIZES:
                try:
                    runs.append(crowd_run(ctx, store, slots, n))
                except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                    log(f"{store} holders={slots} N={n}: failed: {e}")
                    meta.setdefault("notes", []).append(
                        f"- {store}, {slots} holder(s), N = {n}: the run failed: {e}")
                if keep:
                    with open(keep, "w") as f:
                        json.dump(runs, f, indent=1)
    # CROWD_KEEP: a JSON of an earlier run (CROWD_JSON); its runs of
    # (store, holders, N) not measured now are reported beside these,
    # marked as such.
    kept = os.environ.get("CROWD_KEEP")
    if kept:
        have = {(r["store"], r["slots"], r["n"]) for r in runs}
        with open(kept) as f:
            old = [r for r in json.load(f) if (r["store"], r["slots"], r["n"]) not in have]
        for r in old:
            meta.setdefault("notes", []).append(
                f"- {r['store']}, {r['slots']} holder(s), N = {r['n']}: kept from an earlier run "
                f"of this script (CROWD_KEEP: {os.path.basename(kept)}), not measured again.")
        runs += old
        runs.sort(key=lambda r: (STORES.index(r["store"]) if r["store"] in STORES else 9,
                                 r["slots"], r["n"]))
    meta["uptime1"] = uptime()
    meta["took"] = time.time() - t0
    log(f"uptime after: {meta['uptime1']}")
    out = os.environ.get("BENCH_OUT", "BENCHMARKS.md")
    splice(out, section(runs, meta))
    log(f"wrote the \"{TITLE}\" section of {out}")


if __name__ == "__main__":
    main()
