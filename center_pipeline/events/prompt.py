"""Build the system and user prompts that ask the LLM for a center's upcoming events.

The wording lives in `center_pipeline/prompts/events_prompt.txt`, and for calls with web
search in `events_prompt_grounded.txt`, so it can be edited without code changes. Each file
has a `[system]` section and a `[user]` section, each a
`string.Template` with the placeholders $center_name, $location, $radius_miles, $today,
$window_days and $end_date. A literal dollar sign is written `$$`.
"""

import json
import math
import re
import unicodedata
from datetime import date, timedelta
from functools import cache
from importlib import resources
from string import Template

TEMPLATE_PACKAGE = "center_pipeline"
TEMPLATE_PATH = ("prompts", "events_prompt.txt")
GROUNDED_TEMPLATE_PATH = ("prompts", "events_prompt_grounded.txt")

# Maximum characters of each center field placed in the prompt. Longer values are cut.
MAX_FIELD_CHARS = 120

_SECTION_RE = re.compile(r"^\[(system|user)\][ \t]*\r?\n", re.MULTILINE)


def location_string(zip: str | None, city: str | None, state: str | None) -> str:
    """Format a location such as "Austin, TX 78701", leaving out the parts that are missing."""
    city_text = (city or "").strip()
    region = " ".join(part for part in ((state or "").strip(), (zip or "").strip()) if part)
    return ", ".join(part for part in (city_text, region) if part)


def render_prompt(
    *,
    center_name: str,
    city: str | None,
    state: str | None,
    zip: str | None,
    radius_miles: float,
    today: date,
    window_days: int,
    web_search: bool = False,
) -> tuple[str, str]:
    """Fill the prompt template for one center, the grounded one when `web_search` is set.

    The center name and location enter the prompt as JSON strings of at most 120
    characters, with line breaks and control characters removed, so that they cannot
    add lines or instructions to the prompt.

    Returns:
        (system prompt, user prompt).

    Raises:
        ValueError: The center has no city, state or ZIP code, the radius is not a positive
            number, or window_days is negative.
        KeyError: The template uses a placeholder that is not listed above.
    """
    location = location_string(zip, city, state)
    if not location:
        raise ValueError(f"center {center_name!r} has no city, state or ZIP code to search")
    if not math.isfinite(radius_miles) or radius_miles <= 0:
        raise ValueError(f"radius_miles must be a positive number, got {radius_miles!r}")
    if window_days < 0:
        raise ValueError(f"window_days must be 0 or more, got {window_days}")

    values = {
        "center_name": _quoted(center_name),
        "location": _quoted(location),
        "radius_miles": f"{radius_miles:g}",
        "today": today.isoformat(),
        "window_days": str(window_days),
        "end_date": (today + timedelta(days=window_days)).isoformat(),
    }
    template_path = GROUNDED_TEMPLATE_PATH if web_search else TEMPLATE_PATH
    system_template, user_template = _load_templates(template_path)
    return system_template.substitute(values).strip(), user_template.substitute(values).strip()


def _quoted(value: str | None) -> str:
    """Return the value as a one-line JSON string, cut to MAX_FIELD_CHARS characters."""
    # Line breaks become spaces first, then the remaining control and format characters go.
    text = " ".join((value or "").split())
    text = "".join(char for char in text if not unicodedata.category(char).startswith("C"))
    text = text[:MAX_FIELD_CHARS]
    return json.dumps(text, ensure_ascii=False)


@cache
def _load_templates(template_path: tuple[str, ...]) -> tuple[Template, Template]:
    """Read a template file once per process and split it into its two sections."""
    path = resources.files(TEMPLATE_PACKAGE).joinpath(*template_path)
    text = path.read_text(encoding="utf-8")
    parts = _SECTION_RE.split(text)
    # split() gives [text before the first header, name, body, name, body].
    sections = dict(zip(parts[1::2], parts[2::2], strict=True))
    missing = {"system", "user"} - sections.keys()
    if missing:
        raise ValueError(
            f"prompt template {'/'.join(template_path)} lacks the section(s) "
            f"{', '.join(sorted(missing))}. Start each section with a [system] or [user] line."
        )
    return Template(sections["system"]), Template(sections["user"])
