"""Parse location API response bodies into slugs, next-page links and Center records.

All functions here are pure (no HTTP). Keys in response bodies are matched by their key
form: lowercased with "_", "-" and spaces removed, so one alias such as "zipcode" covers
"zip_code", "zipCode" and "ZIP-Code".
"""

from __future__ import annotations

import html
import logging
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import urljoin

import us
from email_validator import EmailNotValidError, validate_email

from center_pipeline.locations.models import (
    Center,
    CenterNotFound,
    CenterStatus,
    LocationApiError,
    SkipRecord,
)

logger = logging.getLogger(__name__)

KM_PER_MILE = 1.609344

# Keys under which a page body may carry its list of slugs or slug objects.
SLUG_LIST_KEYS = (
    "slugs", "data", "results", "items", "locations", "centers", "stores", "records",
    "entries", "rows", "content",
)
# Keys of the slug inside one object of a slug list.
SLUG_KEYS = ("slug", "urlslug", "centerslug", "locationslug")

# Keys of the next-page link, at the top level or inside one of the containers below.
NEXT_LINK_KEYS = ("next", "nexturl", "nextlink", "nextpageurl", "nexthref")
NEXT_LINK_CONTAINERS = ("links", "pagination", "meta", "paging", "pageinfo")

# Keys under which an envelope contains a detail record or a list of records.
DETAIL_WRAPPER_KEYS = (
    "data", "result", "results", "center", "location", "item", "items", "record",
    "store", "centers", "locations",
)

CENTER_ID_KEYS = (
    "centerid", "id", "locationid", "storeid", "siteid", "franchiseid", "centernumber",
    "storenumber", "locationnumber", "externalid", "uuid",
)
CENTER_NAME_KEYS = (
    "centername", "name", "locationname", "storename", "sitename", "displayname", "title",
)
CITY_KEYS = ("city", "town", "locality", "addresslocality", "cityname")
STATE_KEYS = (
    "state", "statecode", "stateabbr", "stateabbreviation", "statename", "province",
    "provincecode", "addressregion", "region",
)
ZIP_KEYS = ("zip", "zipcode", "postalcode", "postcode", "postal", "zip5")
# One-line addresses such as "12 Centre St, Boston, MA 02130", used only for missing parts.
FULL_ADDRESS_KEYS = ("fulladdress", "formattedaddress", "address", "location")
EMAIL_KEYS = (
    "owneremail", "email", "contactemail", "emailaddress", "owneremailaddress",
    "franchiseeemail",
)
RADIUS_MILES_KEYS = (
    "radiusmiles", "radius", "serviceradiusmiles", "serviceradius", "radiusmi",
    "serviceradiusmi",
)
RADIUS_KM_KEYS = (
    "radiuskm", "serviceradiuskm", "radiuskilometers", "radiuskilometres",
    "serviceradiuskilometers", "serviceradiuskilometres",
)
STATUS_KEYS = (
    "status", "centerstatus", "locationstatus", "storestatus", "operatingstatus", "openstatus",
)
COMING_SOON_KEYS = ("comingsoon", "iscomingsoon")
ACTIVE_KEYS = ("isactive", "active", "enabled", "isenabled")
TEMPORARILY_CLOSED_KEYS = ("temporarilyclosed", "istemporarilyclosed", "tempclosed")
CLOSED_KEYS = ("closed", "isclosed", "permanentlyclosed", "ispermanentlyclosed")

# Keys that only a center record has, never an envelope around one.
RECORD_FIELD_KEYS = frozenset(
    (*SLUG_KEYS, *CENTER_ID_KEYS, *CENTER_NAME_KEYS, *CITY_KEYS, *STATE_KEYS, *ZIP_KEYS,
     *EMAIL_KEYS)
)

# Nested objects searched after the top level, per group of fields, in order of preference.
IDENTITY_CONTAINERS = ("attributes", "properties")
ADDRESS_CONTAINERS = (
    "address", "location", "physicaladdress", "postaladdress", "attributes", "properties",
)
EMAIL_CONTAINERS = ("owner", "franchisee", "contact", "contactinfo", "attributes", "properties")

# Status strings after _status_form (lowercase words separated by single spaces).
STATUS_ALIASES: dict[str, CenterStatus] = {
    **dict.fromkeys(
        ("active", "open", "opened", "operating", "operational", "live", "published",
         "enabled"),
        CenterStatus.ACTIVE,
    ),
    **dict.fromkeys(
        ("inactive", "not active", "disabled", "deactivated", "suspended", "unpublished",
         "hidden", "paused", "on hold"),
        CenterStatus.INACTIVE,
    ),
    **dict.fromkeys(
        ("coming soon", "comingsoon", "opening soon", "pre opening", "preopening",
         "pre sale", "presale", "planned", "future"),
        CenterStatus.COMING_SOON,
    ),
    **dict.fromkeys(
        ("temporarily closed", "temporary closed", "temp closed", "closed temporarily",
         "temporarily unavailable", "temporary closure"),
        CenterStatus.TEMPORARILY_CLOSED,
    ),
    **dict.fromkeys(
        ("closed", "permanently closed", "closed permanently", "perm closed",
         "permanent closure", "terminated", "defunct"),
        CenterStatus.CLOSED,
    ),
}

TRUE_STRINGS = frozenset({"1", "true", "t", "yes", "y", "on"})
FALSE_STRINGS = frozenset({"0", "false", "f", "no", "n", "off"})

# State spellings that us.states.lookup (us 4.0) does not resolve, after _state_form.
STATE_ALIASES = {
    "washington dc": "DC",
    "washington d c": "DC",
    "us virgin islands": "VI",
    "u s virgin islands": "VI",
    "united states virgin islands": "VI",
}

_ZIP_RE = re.compile(r"^(\d{3,5})(?:[-\s]?\d{4})?$")
_LOWEST_ZIP = "00501"  # Holtsville, NY: no valid ZIP code sorts before it.
_RADIUS_RE = re.compile(
    r"^(?P<number>\d+(?:\.\d+)?|\.\d+)\s*(?P<unit>mi|miles?|km|kms|kilomet(?:er|re)s?)?\.?$",
    re.IGNORECASE,
)
_ADDRESS_TAIL_RE = re.compile(
    r"(?:^|,)\s*(?P<city>[^,]+?)\s*,\s*(?P<state>[A-Za-z][A-Za-z. ]*?)\.?"
    r"(?:\s+(?P<zip>\d{5}(?:-\d{4})?))?\s*$"
)
_COUNTRY_SUFFIX_RE = re.compile(
    r",?\s*(?:USA|U\.S\.A\.|US|U\.S\.|United States(?: of America)?)\s*$", re.IGNORECASE
)


def extract_slugs(body: Any) -> list[str]:
    """Extract the slugs from one slug-list page body.

    Accepts a bare list of strings or of objects with a slug field, or such a list under
    one of SLUG_LIST_KEYS (nested up to three levels). Slugs are trimmed, and empty
    strings and repeats are dropped, keeping the first order. An empty list is valid.

    Raises:
        LocationApiError: The body contains no recognizable slug list.
    """
    items = _find_slug_list(body, depth=3)
    if items is None:
        raise LocationApiError(
            f"slug list response has no recognizable slug list: found {_describe(body)}. "
            f"Expected a list of strings or of objects with a 'slug' field, optionally "
            f"under one of the keys {', '.join(SLUG_LIST_KEYS)}"
        )

    slugs: dict[str, None] = {}  # A dict keeps the first order and drops repeats.
    unusable = 0
    for item in items:
        slug = _slug_of_item(item)
        if slug is None:
            unusable += 1
        elif slug:
            slugs.setdefault(slug)
    if items and unusable == len(items):
        raise LocationApiError(
            f"slug list response has {len(items)} entries but none has a string slug: "
            f"the first entry is {_describe(items[0])}"
        )
    if unusable:
        logger.warning("Skipped %d slug list entries that have no string slug", unusable)
    return list(slugs)


def next_page_url(body: Any, current_url: str) -> str | None:
    """Return the absolute URL of the next slug-list page, or None on the last page.

    Looks for a link under NEXT_LINK_KEYS at the top level and inside NEXT_LINK_CONTAINERS
    (for example "links.next" or "pagination.next_url"). A link object with "href" or
    "url" is accepted. A relative link such as "?page=2" is resolved against current_url.

    Raises:
        LocationApiError: The next link is neither a URL nor empty (for example a bare
            page number), because stopping there would silently drop the later pages.
    """
    if not isinstance(body, Mapping):
        return None
    for container in _iter_containers(body, NEXT_LINK_CONTAINERS, depth=3):
        link = _first_value(container, NEXT_LINK_KEYS)
        if isinstance(link, Mapping):
            link = _first_value(link, ("href", "url"))
        if link is None or link is False or (isinstance(link, str) and not link.strip()):
            continue
        if not isinstance(link, str):
            raise LocationApiError(
                f"slug list page {current_url} has a next-page value {link!r} that is not a URL"
            )
        return urljoin(current_url, link.strip())
    return None


def unwrap_detail(body: Any) -> dict[str, Any]:
    """Return the center record from a detail response body.

    The record may be the body itself, wrapped in an envelope such as {"data": ...}, or
    the only element of a list.

    Raises:
        CenterNotFound: The body or its envelope is empty (an empty list, {} or null).
        LocationApiError: The body contains several records or is not a JSON object.
    """
    current = body
    for _ in range(4):
        if isinstance(current, list):
            if not current:
                raise CenterNotFound("detail response is an empty list")
            if len(current) > 1:
                raise LocationApiError(
                    f"detail response is a list of {len(current)} records, expected one"
                )
            current = current[0]
            continue
        if current is None or (isinstance(current, Mapping) and not current):
            raise CenterNotFound(f"detail response is empty ({_describe(current)})")
        if not isinstance(current, Mapping):
            break
        wrapped = _envelope_content(current)
        if wrapped is _NOT_AN_ENVELOPE:
            return dict(current)
        current = wrapped
    raise LocationApiError(f"detail response is not a center record: found {_describe(current)}")


def normalize_center(record: dict[str, Any], slug: str, default_radius_miles: float) -> Center:
    """Build a Center from one unwrapped detail record.

    Args:
        record: The record returned by unwrap_detail.
        slug: The slug the record was requested for. It becomes Center.slug.
        default_radius_miles: Radius used when the record has none or an invalid one.

    Raises:
        SkipRecord: The record's slug differs from the requested slug, or the record has
            no usable location (no valid ZIP and no city plus valid state).
    """
    requested_slug = slug.strip()
    identity = _Fields(record, IDENTITY_CONTAINERS)
    _check_slug(identity, requested_slug)

    city, state, zip_code = _location(record, requested_slug)
    status = _status(identity, requested_slug)
    return Center(
        center_id=_center_id(identity, requested_slug),
        slug=requested_slug,
        center_name=clean_text(identity.first(CENTER_NAME_KEYS)) or requested_slug,
        city=city,
        state=state,
        zip=zip_code,
        owner_email=_owner_email(record, requested_slug),
        radius_miles=_radius_miles(identity, requested_slug, default_radius_miles),
        status=status,
        is_active=status is CenterStatus.ACTIVE,
    )


def clean_text(value: Any) -> str | None:
    """Return value as trimmed text with HTML entities decoded and whitespace collapsed.

    Numbers become their decimal text. A WordPress-style {"rendered": ...} object yields
    its rendered text. Returns None for missing, empty and non-text values.
    """
    if isinstance(value, Mapping) and "rendered" in value:
        value = value["rendered"]
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else str(value)
    if not isinstance(value, str):
        return None
    # Some APIs escape twice ("&amp;amp;"), so decode until the text stops changing.
    for _ in range(3):
        decoded = html.unescape(value)
        if decoded == value:
            break
        value = decoded
    return " ".join(value.split()) or None


def normalize_zip(value: Any) -> str | None:
    """Return the five-digit ZIP code in value, or None if value is not a valid ZIP.

    Accepts ZIP+4 with or without a separator, and restores leading zeros lost when a
    ZIP was stored as a number (2130 becomes "02130").
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        digits = str(value)
        if value <= 0 or len(digits) > 9:
            return None
        zip_code = digits.zfill(5) if len(digits) <= 5 else digits.zfill(9)[:5]
    else:
        text = clean_text(value) if isinstance(value, str) else None
        match = _ZIP_RE.match(text) if text else None
        if match is None:
            return None
        zip_code = match.group(1).zfill(5)
    return zip_code if zip_code >= _LOWEST_ZIP else None


def normalize_state(value: Any, *, fuzzy: bool = True) -> str | None:
    """Return the USPS code for a US state, DC or territory name or code, else None.

    With fuzzy, names are matched by sound as us.states.lookup does ("Massachusets" is
    MA). Without it, a name must match exactly, ignoring case.
    """
    if isinstance(value, Mapping):
        value = _first_value(value, ("code", "abbr", "abbreviation", "name"))
    text = clean_text(value) if isinstance(value, str) else None
    if text is None:
        return None
    form = _state_form(text)
    compact = form.replace(" ", "")
    if not compact.isalpha():
        return None  # Digits would make us.states.lookup match FIPS codes.
    if form in STATE_ALIASES:
        return STATE_ALIASES[form]
    if len(compact) == 2:
        state = us.states.lookup(compact.upper(), field="abbr")
    elif fuzzy:
        state = us.states.lookup(form)
    else:
        state = us.states.lookup(form.title().replace(" Of ", " of "), field="name")
    return state.abbr if state is not None else None


def parse_bool(value: Any) -> bool | None:
    """Return value as a bool, accepting 1/0, "yes"/"no", "true"/"false" and the like.

    Returns None for missing or unrecognized values.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_STRINGS:
            return True
        if word in FALSE_STRINGS:
            return False
    return None


class _Fields:
    """First-match lookup of aliased keys across a record and some of its nested objects."""

    def __init__(self, record: Mapping[str, Any], container_keys: tuple[str, ...]) -> None:
        self.containers = list(_iter_containers(record, container_keys, depth=2))

    def first(self, keys: Iterable[str], *, text_only: bool = False) -> Any:
        """Return the first present, non-empty value for keys, or None."""
        found = self.first_item(keys, text_only=text_only)
        return found[1] if found else None

    def first_item(
        self, keys: Iterable[str], *, text_only: bool = False
    ) -> tuple[str, Any] | None:
        """Return (key form, value) of the first present, non-empty value for keys.

        With text_only, values that are not strings are passed over.
        """
        keys = tuple(keys)
        for container in self.containers:
            for key in keys:
                value = container.get(key)
                if value is None or (text_only and not isinstance(value, str)):
                    continue
                if not (isinstance(value, str) and not value.strip()):
                    return key, value
        return None


_NOT_AN_ENVELOPE = object()


def _envelope_content(body: Mapping[str, Any]) -> Any:
    """Return what an envelope wraps, or _NOT_AN_ENVELOPE if body is the record itself.

    A mapping is an envelope when it has a wrapper key and no record field of its own,
    so a flat record with a nested "location" object is not mistaken for an envelope.
    """
    forms = _key_forms(body)
    if any(key in forms for key in RECORD_FIELD_KEYS):
        return _NOT_AN_ENVELOPE
    for key in DETAIL_WRAPPER_KEYS:
        if key in forms and (forms[key] is None or isinstance(forms[key], (Mapping, list))):
            return forms[key]
    return _NOT_AN_ENVELOPE


def _find_slug_list(body: Any, depth: int) -> list[Any] | None:
    if isinstance(body, list):
        return body
    if not isinstance(body, Mapping) or depth == 0:
        return None
    forms = _key_forms(body)
    for key in SLUG_LIST_KEYS:
        if key in forms:
            found = _find_slug_list(forms[key], depth - 1)
            if found is not None:
                return found
    return None


def _slug_of_item(item: Any) -> str | None:
    """Return the trimmed slug of one slug-list entry ("" if blank), or None if it has none."""
    if isinstance(item, Mapping):
        item = _first_value(item, SLUG_KEYS)
    if not isinstance(item, str):
        return None
    return item.strip()


def _check_slug(identity: _Fields, requested_slug: str) -> None:
    record_slug = identity.first(SLUG_KEYS)
    if record_slug is None:
        return
    if not isinstance(record_slug, str) or record_slug.strip() != requested_slug:
        raise SkipRecord(
            f"slug mismatch: requested {requested_slug!r} but the record has {record_slug!r}"
        )


def _center_id(identity: _Fields, slug: str) -> str:
    center_id = clean_text(identity.first(CENTER_ID_KEYS))
    if center_id is None:
        logger.warning("Center %r has no id field, so the slug is used as center_id", slug)
        return slug
    return center_id


def _location(record: Mapping[str, Any], slug: str) -> tuple[str | None, str | None, str | None]:
    """Return (city, state, zip) or raise SkipRecord when none of them locates the center."""
    fields = _Fields(record, ADDRESS_CONTAINERS)
    raw_city = fields.first(CITY_KEYS)
    raw_state = fields.first(STATE_KEYS)
    raw_zip = fields.first(ZIP_KEYS)
    city = clean_text(raw_city) if isinstance(raw_city, str) else None
    state = normalize_state(raw_state)
    zip_code = normalize_zip(raw_zip)

    if city is None or state is None or zip_code is None:
        parsed = _parse_address_line(fields.first(FULL_ADDRESS_KEYS, text_only=True))
        if parsed is not None:
            city = city or parsed[0]
            state = state or parsed[1]
            zip_code = zip_code or parsed[2]

    if raw_state is not None and state is None:
        logger.warning("Center %r: state %r is not a US state or territory", slug, raw_state)
    if raw_zip is not None and zip_code is None:
        logger.warning("Center %r: ZIP code %r is invalid", slug, raw_zip)
    if zip_code is None and (city is None or state is None):
        raise SkipRecord(
            f"no usable location: center {slug!r} has no valid ZIP code and no city with a "
            f"US state (city={raw_city!r}, state={raw_state!r}, zip={raw_zip!r})"
        )
    return city, state, zip_code


def _parse_address_line(value: Any) -> tuple[str | None, str | None, str | None] | None:
    """Parse "..., City, ST 12345" into (city, state, zip), or return None."""
    text = clean_text(value) if isinstance(value, str) else None
    if text is None:
        return None
    match = _ADDRESS_TAIL_RE.search(_COUNTRY_SUFFIX_RE.sub("", text))
    if match is None:
        return None
    # Exact state names only: fuzzy matching would read street names ("Main St") as states.
    state = normalize_state(match.group("state"), fuzzy=False)
    if state is None:
        return None
    return clean_text(match.group("city")), state, normalize_zip(match.group("zip"))


def _owner_email(record: Mapping[str, Any], slug: str) -> str | None:
    value = _Fields(record, EMAIL_CONTAINERS).first(EMAIL_KEYS)
    if isinstance(value, list):
        value = next((item for item in value if isinstance(item, str) and item.strip()), None)
    text = clean_text(value) if isinstance(value, str) else None
    if text is None:
        if value is not None:
            logger.warning("Center %r: owner email is not text, so none is stored", slug)
        return None
    if text.lower().startswith("mailto:"):
        text = text[len("mailto:"):]
    try:
        result = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        # The address itself is personal data, so only the validator's reason is logged.
        logger.warning("Center %r: owner email is invalid, so none is stored: %s", slug, exc)
        return None
    return result.normalized.lower()


def _radius_miles(identity: _Fields, slug: str, default_radius_miles: float) -> float:
    found = identity.first_item((*RADIUS_MILES_KEYS, *RADIUS_KM_KEYS))
    if found is None:
        return float(default_radius_miles)
    key, value = found
    radius = _parse_radius(value, in_km=key in RADIUS_KM_KEYS)
    if radius is None:
        logger.warning(
            "Center %r: radius %r is not a positive number, so the default %s miles is used",
            slug, value, default_radius_miles,
        )
        return float(default_radius_miles)
    return radius


def _parse_radius(value: Any, *, in_km: bool) -> float | None:
    """Return a positive radius in miles, or None. A unit in a text value overrides in_km."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        match = _RADIUS_RE.match(value.strip())
        if match is None:
            return None
        number = float(match.group("number"))
        unit = (match.group("unit") or "").lower()
        if unit:
            in_km = unit.startswith("k")
    else:
        return None
    if not math.isfinite(number) or number <= 0:
        return None
    return number / KM_PER_MILE if in_km else number


def _status(identity: _Fields, slug: str) -> CenterStatus:
    """Return the status: an explicit status value wins, then the flags, else ACTIVE.

    Among the flags, the most specific wins: coming soon, then temporarily closed, then
    closed, then an active flag that is false.
    """
    raw_status = identity.first(STATUS_KEYS)
    if raw_status is not None:
        status = _parse_status(raw_status)
        if status is not None:
            return status
        logger.warning("Center %r: unknown status %r, so the flags decide", slug, raw_status)

    if parse_bool(identity.first(COMING_SOON_KEYS)):
        return CenterStatus.COMING_SOON
    if parse_bool(identity.first(TEMPORARILY_CLOSED_KEYS)):
        return CenterStatus.TEMPORARILY_CLOSED
    if parse_bool(identity.first(CLOSED_KEYS)):
        return CenterStatus.CLOSED
    if parse_bool(identity.first(ACTIVE_KEYS)) is False:
        return CenterStatus.INACTIVE
    return CenterStatus.ACTIVE


def _parse_status(value: Any) -> CenterStatus | None:
    if isinstance(value, str):
        status = STATUS_ALIASES.get(_status_form(value))
        if status is not None:
            return status
    # Some APIs send status as 1/0 or true/false for active/inactive.
    flag = parse_bool(value)
    if flag is None:
        return None
    return CenterStatus.ACTIVE if flag else CenterStatus.INACTIVE


def _status_form(text: str) -> str:
    return " ".join(re.sub(r"[^a-z]+", " ", html.unescape(text).lower()).split())


def _state_form(text: str) -> str:
    return " ".join(re.sub(r"[.,]", " ", text).lower().split())


def _key_form(key: Any) -> str:
    return re.sub(r"[\s_\-]+", "", str(key)).lower()


def _key_forms(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Return mapping re-keyed by key form. On a collision the first key wins."""
    forms: dict[str, Any] = {}
    for key, value in mapping.items():
        forms.setdefault(_key_form(key), value)
    return forms


def _first_value(mapping: Mapping[str, Any], keys: Iterable[str]) -> Any:
    forms = _key_forms(mapping)
    for key in keys:
        if forms.get(key) is not None:
            return forms[key]
    return None


def _iter_containers(
    record: Mapping[str, Any], container_keys: tuple[str, ...], depth: int
) -> Iterator[dict[str, Any]]:
    """Yield record and its nested objects under container_keys, re-keyed by key form.

    Breadth first, so top-level keys win over nested ones.
    """
    level = [_key_forms(record)]
    for _ in range(depth + 1):
        next_level = []
        for container in level:
            yield container
            for key in container_keys:
                child = container.get(key)
                if isinstance(child, Mapping):
                    next_level.append(_key_forms(child))
        level = next_level


def _describe(value: Any) -> str:
    """Describe a JSON value's shape for an error message without dumping all of it."""
    if isinstance(value, Mapping):
        keys = list(value)
        first_keys = ", ".join(repr(key) for key in keys[:10])
        more = f" and {len(keys) - 10} more" if len(keys) > 10 else ""
        return f"an object with keys [{first_keys}{more}]"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    text = repr(value)
    return f"{type(value).__name__} {text[:80]}{'...' if len(text) > 80 else ''}"
