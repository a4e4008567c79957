"""``difftrt bench --compare OLD.json NEW.json``: the change of every figure two records share, flagged only
where it is beyond the measured spread: the two runs' p10–p90 intervals do not overlap.

Records from different machines are still compared, with a warning: milliseconds do not carry across
machines, the ratios within each record do (the ``x ref`` rows)."""

from __future__ import annotations

from typing import Any

from difftrt.bench.e2e import STAGES
from difftrt.errors import ArtifactError


def beyond_spread(old: dict[str, float], new: dict[str, float]) -> bool:
    """True when the p10–p90 intervals of two timing stats do not overlap."""
    return new["p10_ms"] > old["p90_ms"] or new["p90_ms"] < old["p10_ms"]


def _rows(record: dict[str, Any], path: str) -> dict[str, dict[str, Any]]:
    if record.get("schema") != "difftrt-bench" or record.get("schema_version") != 2:
        raise ArtifactError(f"{path} is not a difftrt bench record of schema version 2 (made by `difftrt bench --json` "
                            "of this version); re-run the bench to compare")
    return {r["name"]: r for r in record["rows"] if r.get("ran")}


def compare(old: dict[str, Any], new: dict[str, Any], old_path: str = "OLD", new_path: str = "NEW") -> dict[str, Any]:
    """Every (backend, stage) in both records: medians, relative change, and whether it is beyond the spread;
    plus each backend's speed-up against its record's reference, old and new."""
    a, b = _rows(old, old_path), _rows(new, new_path)
    changes = []
    for name in (n for n in b if n in a):
        for stage in STAGES:
            s_old, s_new = a[name]["stages"][stage], b[name]["stages"][stage]
            changes.append({"backend": name, "stage": stage, "old_ms": s_old["median_ms"], "new_ms": s_new["median_ms"],
                            "change": s_new["median_ms"] / s_old["median_ms"] - 1.0,
                            "beyond_spread": beyond_spread(s_old, s_new)})
    ratios = [{"backend": n, "old": old["headline"]["speedup_vs_reference"].get(n),
               "new": new["headline"]["speedup_vs_reference"].get(n)} for n in b if n in a]
    same = old["machine"].get("cpu") == new["machine"].get("cpu") and old["machine"].get("cores") == new["machine"].get("cores")
    return {"same_machine": same, "changes": changes, "ratios": ratios,
            "only_old": sorted(set(a) - set(b)), "only_new": sorted(set(b) - set(a))}


def format_compare(result: dict[str, Any]) -> str:
    lines = [] if result["same_machine"] else [
        "warning: the records come from different machines: compare the ratios (x ref), not the milliseconds", ""]
    lines.append(f"{'backend':<40} {'stage':<13} {'old ms':>9} {'new ms':>9} {'change':>8}  verdict")
    for c in result["changes"]:
        verdict = ("SLOWER" if c["change"] > 0 else "FASTER") if c["beyond_spread"] else "within spread"
        lines.append(f"{c['backend']:<40} {c['stage']:<13} {c['old_ms']:>9.2f} {c['new_ms']:>9.2f} "
                     f"{c['change']:>+7.1%}  {verdict}")
    lines.append("")
    for r in result["ratios"]:
        if r["old"] is not None and r["new"] is not None:
            lines.append(f"{r['backend']:<40} x ref {r['old']:.2f} -> {r['new']:.2f}")
    for key, label in (("only_old", "only in OLD"), ("only_new", "only in NEW")):
        if result[key]:
            lines.append(f"{label}: {', '.join(result[key])}")
    return "\n".join(lines)
