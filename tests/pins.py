"""Pinned numbers: which of a summary's numbers moved from a stored reference, and which intervals exclude their
estimate (shared by the CI-size references and the kept full-size runs)."""

from __future__ import annotations

REL_TOL = 1e-9  # the floor of every reference's tolerance (its own, measured, is stored in it: tools/tolerances.py)


def moved(reference: dict, summary: dict) -> list[str]:
    """Every pinned number (tracks, comparison, each verdict's effect, CI, p and n) that moved beyond the reference's
    tolerance (10x the spread measured across CPU kernels, at least REL_TOL)."""
    tol = max(REL_TOL, reference.get("tolerance", {}).get("relative", REL_TOL))
    pinned = {"tracks": reference["tracks"], "comparison": reference.get("comparison", {})}
    gone = [k for k, a, b in numbers(pinned, summary) if not close(a, b, tol)]
    verdicts = {v["hypothesis"]: v for v in summary["verdicts"]}
    for v in reference["verdicts"]:  # the product: every verdict, its effect, CI, p and n
        got = verdicts.get(v["hypothesis"])
        if got is None or got["verdict"] != v["verdict"] or got["n"] != v["n"]:
            gone.append(f"verdict {v['hypothesis']!r}")
            continue
        gone += [f"{v['hypothesis']!r}.{k}" for k, a, b in numbers(v, got) if not close(a, b, tol)]
    return gone


def outside(summary: dict) -> list[str]:
    """Every interval of a summary that excludes its estimate: `x` beside `x_lo`/`x_hi` in any mapping, and each
    verdict's effect against its CI (both two-sided at the stated level)."""
    bad = []

    def walk(node, where):
        if isinstance(node, dict):
            for k, v in node.items():
                lo, hi = node.get(f"{k}_lo"), node.get(f"{k}_hi")
                if isinstance(v, (int, float)) and isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
                    if all(u == u for u in (v, lo, hi)) and not lo - 1e-12 <= v <= hi + 1e-12:
                        bad.append(f"{where}{k} = {v} outside [{lo}, {hi}]")
                walk(v, f"{where}{k}.")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}{i}.")

    walk(summary.get("tracks", {}), "tracks.")
    walk(summary.get("comparison", {}), "comparison.")
    for v in summary.get("verdicts", []):
        if all(u is not None and u == u for u in (v["effect"], v["ci_lo"], v["ci_hi"])):
            if not v["ci_lo"] - 1e-12 <= v["effect"] <= v["ci_hi"] + 1e-12:
                bad.append(f"verdict {v['hypothesis']!r}: effect {v['effect']} outside [{v['ci_lo']}, {v['ci_hi']}]")
    return bad


def numbers(ref, got, prefix=""):
    if isinstance(ref, dict):
        for k, v in ref.items():
            yield from numbers(v, got.get(k) if isinstance(got, dict) else None, f"{prefix}{k}.")
    elif isinstance(ref, list):
        for i, v in enumerate(ref):
            yield from numbers(v, got[i] if isinstance(got, list) and i < len(got) else None, f"{prefix}{i}.")
    elif isinstance(ref, (int, float)) and not isinstance(ref, bool):
        yield prefix.rstrip("."), ref, got


def close(a, b, tol=REL_TOL) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if a != a:
        return b != b
    return abs(a - b) <= tol * max(1.0, abs(a))
