"""Text reports of the lm commands' dicts (and of ``attractor measure`` on a tiny-lm run)."""

from __future__ import annotations

from typing import Any

__all__ = ["format_comparison", "format_lm_measure", "format_search"]


def format_comparison(data: dict[str, Any]) -> str:
    """Text report of :func:`lm_compare`'s dict."""
    from attractor.measure.lm_compare import STATS

    lines = [
        f"A = {data['model_a']}",
        f"B = {data['model_b']}",
        f"{data['tokens']:,} positions in {data['documents']} documents of {data['corpus']}",
        "",
    ]
    levels = list(next(iter(data["quantiles"].values())))
    lines.append(
        f"{'statistic':<12} {'mean':>9} {'95% CI (documents)':>22} "
        + " ".join(f"{'q' + q:>9}" for q in levels)
    )
    for name in STATS:
        m = data["means"][name]
        ci = "n/a" if m["low"] is None else f"[{m['low']:.4f}, {m['high']:.4f}]"
        quantiles = " ".join(f"{data['quantiles'][name][q]:>9.4f}" for q in levels)
        lines.append(f"{name:<12} {m['value']:>9.4f} {ci:>22} " + quantiles)
    if data.get("note"):
        lines.append(f"note: {data['note']}")
    if data["top"]:
        lines += ["", f"most divergent positions (by {data['rank_by']}):"]
        for t in data["top"]:
            lines.append(
                f"  {t['stats'][data['rank_by']]:.4f}  {t['document']} @ {t['position']}: "
                f"...{t['context'][-40:]!r} -> {t['next_token']!r}"
            )
            lines.append(f"          A: {_tops(t['top_a'])}   B: {_tops(t['top_b'])}")
    return "\n".join(lines)


def _tops(pairs: list[tuple[str, float]]) -> str:
    return ", ".join(f"{token!r} {p:.2f}" for token, p in pairs)


def format_search(data: dict[str, Any]) -> str:
    """Text report of :func:`lm_search`'s dict."""
    lines = [
        f"A = {data['model_a']}",
        f"B = {data['model_b']}",
        f"{data['objective']} of the next-token distributions after {data['length']}-token "
        f"contexts; budget {data['budget']} forward passes per method",
        "",
    ]
    lines.append(
        f"{'method':<11} {'passes':>6} {'best':>9} {'gain':>9} {'x baseline':>10}  context"
    )
    for name, m in data["methods"].items():
        best = m["best"][0] if m["best"] else {"divergence": float("nan"), "text": ""}
        lines.append(
            f"{name:<11} {m['passes']:>6} {best['divergence']:>9.4f} {m['gain']:>+9.4f} "
            f"{m['ratio']:>10.2f}  {best['text']!r}"
        )
    return "\n".join(lines)


def format_lm_measure(data: dict[str, Any]) -> str:
    """Text report of :func:`attractor.measure.lm.measure_lm_run`'s dict."""
    lines = [
        f"{data['run']}: {len(data['members'])} members, {data['split']} split "
        f"({data['windows']} windows of {data['documents']} documents)"
    ]
    labels = (
        ("loss", "next-token loss"),
        ("pairwise_js", "pairwise JS"),
        ("kl_to_mean", "KL to ensemble mean"),
    )
    for name, label in labels:
        e = data[name]
        lines.append(f"  {label:<20} {e['value']:.4f}  [{e['low']:.4f}, {e['high']:.4f}]")
    per_member = zip(data["members"], data["loss"]["per_member"], strict=True)
    lines.append("  loss per member: " + ", ".join(f"{m}: {v:.4f}" for m, v in per_member))
    return "\n".join(lines)
