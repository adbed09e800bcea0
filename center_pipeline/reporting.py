"""Small formatters for run metadata and summaries."""

from collections.abc import Mapping

MAX_LISTED_REASONS = 50


def markdown_reasons(reasons: Mapping[str, str]) -> str:
    """Format `slug: reason` pairs as a Markdown list of at most 50 entries and a count."""
    if not reasons:
        return "None."
    lines = [f"- `{slug}`: {reason}" for slug, reason in list(reasons.items())[:MAX_LISTED_REASONS]]
    if len(reasons) > MAX_LISTED_REASONS:
        lines.append(f"- … and {len(reasons) - MAX_LISTED_REASONS} more")
    return "\n".join(lines)
