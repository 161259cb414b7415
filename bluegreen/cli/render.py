"""Human text for the results of bluegreen/results.py (``--json`` prints their
``to_json()`` in the envelope instead): the only place a result becomes lines."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: `bg status` need not load the history results
    from bluegreen.results import (
        HistoryResult,
        HostStatus,
        LockReleaseResult,
        LockStatusResult,
        OperationSummary,
        StatusResult,
    )


def status_lines(result: StatusResult) -> list[str]:
    out = []
    c = result.canary
    if c:
        share = f"{c['share']:.1%}" if c["share"] is not None else "-"
        out.append(f"canary: {c['version']} on {c['slot']}, {c['percent']}% of new requests"
                   f"{' (sticky)' if c['sticky'] else ''} for {c['seconds']:.0f}s: served"
                   f" {c['requests']} of {c['all_requests']} ({share}), {c['errors']} failed;"
                   " `bg promote` or `bg abort`")
    for h in result.hosts:
        out += host_status_lines(h)
    return out


def host_status_lines(h: HostStatus) -> list[str]:
    out = [f"{h.host}: live {h.live or '-'} ({h.version or 'nothing deployed'}),"
           f" previous {h.previous or '-'}"]
    for slot, s in h.slots.items():
        flags = ("live " if s.live else "") + ("running" if s.running else "stopped") + (
            ", healthy" if s.healthy else "")
        out.append(f"  {slot:<5} :{s.port:<5} {s.version or '-':<16} {flags}")
    out.append(f"  nginx  upstream :{h.nginx.upstream_port}, serving {h.nginx.serving or '?'}")
    if h.in_progress:
        out.append(f"  in progress: {h.in_progress}")
        out += [f"    (expected while it runs) {note}" for note in h.transient]
    elif h.lock:
        out.append(f"  locked by {h.lock.get('user')} ({h.lock.get('command')})")
    out += [f"  problem: {p}" for p in h.problems]
    return out


def history_lines(result: HistoryResult) -> list[str]:
    out = []
    hosts = result.entries if result.steps else result.operations
    for host in hosts:
        out.append(f"{host}:")
        if result.steps:
            out += ["  " + step_line(e) for e in result.entries[host]]
        else:
            out += ["  " + operation_line(o) for o in result.operations[host]]
    return out


def operation_line(o: OperationSummary) -> str:
    seconds = f"{o.seconds:.2f}s" if o.seconds is not None else "?"
    why = f"  {o.message}" if o.message else ""
    return (f"{(o.time or '?')[:19].replace('T', ' ')}  {o.op or '?':<8}"
            f" {o.version or '-':<12} {o.outcome:<10} {seconds:>8}"
            f"  {o.user or '?'}@{o.controller or '?'}{why}")


def step_line(e: dict[str, object]) -> str:
    extra = " ".join(f"{k}={e[k]}" for k in ("version", "slot") if k in e)
    return (f"{str(e.get('time', '?'))[:19]}  {e.get('user', '?')!s:<8} {e.get('op', '?')!s:<8}"
            f" {e.get('step', '?')!s:<8} {e.get('outcome', '?')!s:<8} {extra}")


def lock_status_lines(result: LockStatusResult) -> list[str]:
    out = []
    for host, held in result.hosts.items():
        if held is None:
            out.append(f"{host}: free")
            continue
        d = held.details
        out.append(f"{host}: held by {d.get('user')}@{d.get('controller')} pid {d.get('pid')}"
                   f" ({d.get('command')}) since {d.get('time')}"
                   + (" [stale]" if held.stale else ""))
    return out


def lock_release_lines(result: LockReleaseResult) -> list[str]:
    return [f"{host}: {result.outcome(host)}" for host in result.hosts]
