"""Tests for center_pipeline.locations.normalize against recorded and extra body shapes."""

import json
import logging
from pathlib import Path

import pytest

from center_pipeline.locations.models import (
    Center,
    CenterNotFound,
    CenterStatus,
    LocationApiError,
    SkipRecord,
)
from center_pipeline.locations.normalize import (
    KM_PER_MILE,
    clean_text,
    extract_slugs,
    next_page_url,
    normalize_center,
    normalize_state,
    normalize_zip,
    parse_bool,
    unwrap_detail,
)

CASES = json.loads((Path(__file__).parent / "data" / "location_cases.json").read_text())
DEFAULT_RADIUS = 25.0
PAGE_URL = "http://127.0.0.1:8000/api/slugs"


def _expected_center(expected: dict) -> Center:
    fields = dict(expected)
    if fields["radius_miles"] == "DEFAULT":
        fields["radius_miles"] = DEFAULT_RADIUS
    fields["status"] = CenterStatus(fields["status"])
    return Center(**fields)


def _center(record: dict, slug: str = "test-center", radius: float = DEFAULT_RADIUS) -> Center:
    return normalize_center(record, slug, radius)


def _located(**fields) -> dict:
    """Return a minimal valid record with fields added or replaced."""
    record = {"id": "C-1", "slug": "test-center", "name": "Test", "zip": "78701"}
    record.update(fields)
    return record


# Recorded cases


@pytest.mark.parametrize(
    "case",
    [case for case in CASES["slug_lists"] if "body" in case],
    ids=lambda case: case["name"],
)
def test_extract_slugs_recorded(case):
    assert extract_slugs(case["body"]) == case["expected_slugs"]


@pytest.mark.parametrize(
    "case",
    [case for case in CASES["slug_lists"] if "pages" in case],
    ids=lambda case: case["name"],
)
def test_paginated_slugs_recorded(case):
    urls = [PAGE_URL]
    slugs: list[str] = []
    for page in case["pages"]:
        slugs.extend(slug for slug in extract_slugs(page) if slug not in slugs)
        urls.append(next_page_url(page, urls[-1]))

    assert slugs == case["expected_slugs"]
    assert urls[1] == PAGE_URL + "?page=2"
    assert urls[-1] is None


def test_slug_list_cases_include_pagination():
    assert any("pages" in case for case in CASES["slug_lists"])


@pytest.mark.parametrize(
    "case",
    [case for case in CASES["details"] if "expected" in case],
    ids=lambda case: case["name"],
)
def test_normalize_center_recorded(case):
    expected = _expected_center(case["expected"])
    record = unwrap_detail(case["body"])

    center = normalize_center(record, expected.slug, DEFAULT_RADIUS)

    assert center == expected


@pytest.mark.parametrize(
    "case",
    [case for case in CASES["details"] if "expected_skip" in case],
    ids=lambda case: case["name"],
)
def test_skip_recorded(case):
    record = unwrap_detail(case["body"])

    with pytest.raises(SkipRecord) as excinfo:
        normalize_center(record, record["slug"], DEFAULT_RADIUS)

    assert str(excinfo.value).startswith(case["expected_skip"])


def test_detail_cases_include_a_skip():
    assert any("expected_skip" in case for case in CASES["details"])


def test_empty_list_detail_recorded():
    case = next(case for case in CASES["detail_http"] if "body" in case)
    with pytest.raises(CenterNotFound):
        unwrap_detail(case["body"])


# extract_slugs


@pytest.mark.parametrize("key", ["slugs", "data", "results", "items", "locations", "centers"])
def test_extract_slugs_common_keys(key):
    body = {key: ["a", {"slug": "b"}], "total": 2}
    assert extract_slugs(body) == ["a", "b"]


def test_extract_slugs_nested_envelope():
    body = {"data": {"items": [{"slug": " a "}, {"slug": "b"}]}, "meta": {"page": 1}}
    assert extract_slugs(body) == ["a", "b"]


def test_extract_slugs_trims_and_dedupes():
    body = ["b\n", "\ta", "b", "  ", "", "a\r\n", "c"]
    assert extract_slugs(body) == ["b", "a", "c"]


def test_extract_slugs_key_spelling():
    assert extract_slugs({"Items": [{"Slug": "a"}, {"url_slug": "b"}]}) == ["a", "b"]


def test_extract_slugs_empty_page():
    assert extract_slugs({"results": [], "next": None}) == []


def test_extract_slugs_entries_without_slug(caplog):
    with caplog.at_level(logging.WARNING):
        slugs = extract_slugs([{"slug": "a"}, {"name": "no slug"}, 7])

    assert slugs == ["a"]
    assert "2 slug list entries" in caplog.text


def test_extract_slugs_no_list_names_keys():
    with pytest.raises(LocationApiError) as excinfo:
        extract_slugs({"error": "boom", "code": 7})

    assert "'error'" in str(excinfo.value)
    assert "'code'" in str(excinfo.value)


@pytest.mark.parametrize("body", ["austin-downtown", 42, None])
def test_extract_slugs_scalar_body(body):
    with pytest.raises(LocationApiError, match="no recognizable slug list"):
        extract_slugs(body)


def test_extract_slugs_objects_without_slugs():
    with pytest.raises(LocationApiError, match="none has a string slug"):
        extract_slugs({"data": [{"id": 1}, {"id": 2}]})


# next_page_url


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"next": "?page=2"}, PAGE_URL + "?page=2"),
        ({"next": "http://127.0.0.1:9000/other?page=3"}, "http://127.0.0.1:9000/other?page=3"),
        ({"next_url": "/api/slugs?cursor=abc"}, "http://127.0.0.1:8000/api/slugs?cursor=abc"),
        ({"nextUrl": "?page=2"}, PAGE_URL + "?page=2"),
        ({"links": {"next": "?page=2"}}, PAGE_URL + "?page=2"),
        ({"pagination": {"next": "?page=4"}}, PAGE_URL + "?page=4"),
        ({"_links": {"next": {"href": "?page=5"}}}, PAGE_URL + "?page=5"),
        ({"meta": {"pagination": {"links": {"next": "?page=6"}}}}, PAGE_URL + "?page=6"),
        ({"next": None, "links": {"next": "?page=7"}}, PAGE_URL + "?page=7"),
    ],
)
def test_next_page_url_found(body, expected):
    assert next_page_url(body, PAGE_URL) == expected


@pytest.mark.parametrize(
    "body",
    [{"next": None}, {"next": ""}, {"links": {"next": None}}, {"data": []}, ["a", "b"]],
)
def test_next_page_url_last_page(body):
    assert next_page_url(body, PAGE_URL) is None


def test_next_page_url_page_number():
    with pytest.raises(LocationApiError, match="not a URL"):
        next_page_url({"next": 2}, PAGE_URL)


# unwrap_detail


@pytest.mark.parametrize(
    "body",
    [
        {"data": {"slug": "a"}},
        [{"slug": "a"}],
        {"data": [{"slug": "a"}]},
        {"result": {"slug": "a"}},
        {"status": "ok", "center": {"slug": "a"}},
        {"data": {"location": {"slug": "a"}}},
        {"slug": "a"},
    ],
)
def test_unwrap_detail_envelopes(body):
    assert unwrap_detail(body) == {"slug": "a"}


def test_unwrap_detail_keeps_nested_location():
    body = {"slug": "a", "location": {"city": "Austin", "state": "TX"}}
    assert unwrap_detail(body) == body


def test_unwrap_detail_flat_record_without_identity():
    body = {"zip": "78701", "location": {"city": "Austin"}}
    assert unwrap_detail(body) == body


@pytest.mark.parametrize("body", [[], {}, None, {"data": []}, {"data": {}}, {"data": None}])
def test_unwrap_detail_empty(body):
    with pytest.raises(CenterNotFound):
        unwrap_detail(body)


def test_unwrap_detail_several_records():
    with pytest.raises(LocationApiError, match="list of 2 records"):
        unwrap_detail([{"slug": "a"}, {"slug": "b"}])


@pytest.mark.parametrize("body", ["not a record", 12, ["text"]])
def test_unwrap_detail_not_a_record(body):
    with pytest.raises(LocationApiError, match="not a center record"):
        unwrap_detail(body)


# ZIP codes


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("78701", "78701"),
        (" 78701 ", "78701"),
        (2130, "02130"),
        (2130.0, "02130"),
        ("2130", "02130"),
        (501, "00501"),
        ("60614-2231", "60614"),
        ("60614 2231", "60614"),
        ("606142231", "60614"),
        (606142231, "60614"),
        (21301234, "02130"),
    ],
)
def test_normalize_zip_valid(value, expected):
    assert normalize_zip(value) == expected


@pytest.mark.parametrize(
    "value",
    ["", "ABCDE", "1234567", "00000", "12", 0, -2130, True, 2130.5, None, "M5V 3L9", [78701]],
)
def test_normalize_zip_invalid(value):
    assert normalize_zip(value) is None


# States


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("TX", "TX"),
        ("tx", "TX"),
        (" Massachusetts ", "MA"),
        ("new york", "NY"),
        ("District of Columbia", "DC"),
        ("D.C.", "DC"),
        ("Washington, D.C.", "DC"),
        ("Puerto Rico", "PR"),
        ("GU", "GU"),
        ("U.S. Virgin Islands", "VI"),
        ({"code": "IL", "name": "Illinois"}, "IL"),
    ],
)
def test_normalize_state_valid(value, expected):
    assert normalize_state(value) == expected


@pytest.mark.parametrize("value", ["Ontario", "ZZ", "25", 25, "", None, "Southwest"])
def test_normalize_state_unknown(value):
    assert normalize_state(value) is None


# Booleans and text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True), (False, False), (1, True), (0, False), ("1", True), ("0", False),
        ("yes", True), ("No", False), ("TRUE", True), (" false ", False), ("maybe", None),
        (None, None), (2, None),
    ],
)
def test_parse_bool(value, expected):
    assert parse_bool(value) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("  Smith &amp; Co  ", "Smith & Co"),
        ("A &#8211; B", "A \u2013 B"),
        ("A&amp;amp;B", "A&B"),
        ("Two\n  lines", "Two lines"),
        ({"rendered": "Tom &#038; Jerry"}, "Tom & Jerry"),
        (1002, "1002"),
        ("   ", None),
        (None, None),
    ],
)
def test_clean_text(value, expected):
    assert clean_text(value) == expected


# normalize_center: key spellings and nesting


@pytest.mark.parametrize("key", ["zip", "zip_code", "zipCode", "postal_code", "postalCode",
                                 "postcode", "ZIP"])
def test_center_zip_keys(key):
    record = {"slug": "test-center", "name": "Test", key: "02130-1234"}
    assert _center(record).zip == "02130"


@pytest.mark.parametrize("key", ["state", "state_code", "stateCode", "province", "region"])
def test_center_state_keys(key):
    record = _located(**{key: "Texas"})
    assert _center(record).state == "TX"


@pytest.mark.parametrize("container", ["address", "location"])
def test_center_nested_address(container):
    record = {
        "id": 7,
        "slug": "test-center",
        "name": "Test",
        container: {"city": " Boston ", "state_code": "ma", "postcode": 2130},
    }
    center = _center(record)

    assert center.city == "Boston"
    assert center.state == "MA"
    assert center.zip == "02130"


def test_center_location_with_nested_address():
    record = {"slug": "test-center", "location": {"address": {"zipCode": "60614"}}}
    assert _center(record).zip == "60614"


def test_center_one_line_address():
    record = {"slug": "test-center", "address": "12 Centre St, Boston, MA 02130, USA"}
    center = _center(record)

    assert center.city == "Boston"
    assert center.state == "MA"
    assert center.zip == "02130"


def test_center_street_line_is_no_location():
    with pytest.raises(SkipRecord, match="no usable location"):
        _center({"slug": "test-center", "address": "Unit B, Main St"})


def test_center_json_api_attributes():
    record = {
        "id": "42",
        "type": "centers",
        "attributes": {"slug": "test-center", "title": "JSON API Center", "zip": "78701",
                       "status": "Coming Soon"},
    }
    center = _center(record)

    assert center.center_id == "42"
    assert center.center_name == "JSON API Center"
    assert center.status is CenterStatus.COMING_SOON


@pytest.mark.parametrize(
    ("key", "value"),
    [("center_name", "A"), ("name", "A"), ("locationName", "A"), ("title", "A"),
     ("title", {"rendered": "A"})],
)
def test_center_name_keys(key, value):
    record = {"slug": "test-center", "zip": "78701", key: value}
    assert _center(record).center_name == "A"


def test_center_name_missing_uses_slug():
    assert _center({"slug": "test-center", "zip": "78701"}).center_name == "test-center"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [("center_id", "C-9", "C-9"), ("id", 9, "9"), ("locationId", "L-9", "L-9"),
     ("store_id", 9.0, "9")],
)
def test_center_id_keys(key, value, expected):
    record = {"slug": "test-center", "zip": "78701", key: value}
    assert _center(record).center_id == expected


def test_center_id_missing_uses_slug(caplog):
    with caplog.at_level(logging.WARNING):
        center = _center({"slug": "test-center", "zip": "78701"})

    assert center.center_id == "test-center"
    assert "no id field" in caplog.text


def test_center_slug_missing_uses_requested():
    record = {"id": 1, "zip": "78701"}
    assert normalize_center(record, "  test-center ", DEFAULT_RADIUS).slug == "test-center"


def test_center_slug_trimmed_match():
    record = _located(slug=" test-center\n")
    assert _center(record).slug == "test-center"


def test_center_slug_mismatch_skipped():
    with pytest.raises(SkipRecord, match="slug mismatch"):
        _center(_located(slug="other-center"))


# normalize_center: location rules


def test_center_unknown_state_with_zip(caplog):
    with caplog.at_level(logging.WARNING):
        center = _center(_located(city="Toronto", state="Ontario"))

    assert center.state is None
    assert center.zip == "78701"
    assert "Ontario" in caplog.text


def test_center_city_and_state_without_zip():
    record = {"slug": "test-center", "city": "Austin", "state": "Texas"}
    center = _center(record)

    assert center.zip is None
    assert center.state == "TX"


def test_center_invalid_zip_without_state():
    record = {"slug": "test-center", "city": "Austin", "zip": "ABCDE"}
    with pytest.raises(SkipRecord, match="no usable location"):
        _center(record)


def test_center_city_only_skipped():
    with pytest.raises(SkipRecord, match="no usable location"):
        _center({"slug": "test-center", "city": "Austin"})


# normalize_center: email


@pytest.mark.parametrize(
    ("record_fields", "expected"),
    [
        ({"owner_email": " Owner@Example.COM "}, "owner@example.com"),
        ({"ownerEmail": "a@example.com"}, "a@example.com"),
        ({"contact_email": "b@example.com"}, "b@example.com"),
        ({"owner": {"email": "C@Example.com"}}, "c@example.com"),
        ({"contact": {"email_address": "d@example.com"}}, "d@example.com"),
        ({"email": "mailto:e@example.com"}, "e@example.com"),
        ({"email": ["f@example.com", "g@example.com"]}, "f@example.com"),
    ],
)
def test_center_email_valid(record_fields, expected):
    assert _center(_located(**record_fields)).owner_email == expected


@pytest.mark.parametrize("value", ["not-an-email", "a@b", "two@example.com three@example.com"])
def test_center_email_invalid(value, caplog):
    with caplog.at_level(logging.WARNING):
        center = _center(_located(email=value))

    assert center.owner_email is None
    assert center.center_id == "C-1"
    assert "owner email is invalid" in caplog.text


# normalize_center: radius


@pytest.mark.parametrize(
    ("record_fields", "expected"),
    [
        ({"radius": 15}, 15.0),
        ({"radius_miles": "12.5"}, 12.5),
        ({"serviceRadiusMiles": "10"}, 10.0),
        ({"service_radius": 8}, 8.0),
        ({"radius": "20 miles"}, 20.0),
        ({"radius_km": 16.09344}, 10.0),
        ({"serviceRadiusKm": "8.04672"}, 5.0),
        ({"radius": "8.04672 km"}, 5.0),
    ],
)
def test_center_radius(record_fields, expected):
    assert _center(_located(**record_fields)).radius_miles == pytest.approx(expected)


@pytest.mark.parametrize("value", [0, -5, "abc", "", None, True, "NaN", float("inf")])
def test_center_radius_default(value):
    center = _center(_located(radius=value), radius=7.5)
    assert center.radius_miles == 7.5
    assert isinstance(center.radius_miles, float)


def test_center_radius_missing_default():
    assert _center(_located(), radius=30).radius_miles == 30.0


def test_km_per_mile():
    assert KM_PER_MILE == pytest.approx(1.609344)


# normalize_center: status


@pytest.mark.parametrize(
    ("record_fields", "expected"),
    [
        ({}, CenterStatus.ACTIVE),
        ({"status": "open"}, CenterStatus.ACTIVE),
        ({"status": "Active"}, CenterStatus.ACTIVE),
        ({"status": "Coming Soon"}, CenterStatus.COMING_SOON),
        ({"status": "coming_soon"}, CenterStatus.COMING_SOON),
        ({"status": "temporarily closed"}, CenterStatus.TEMPORARILY_CLOSED),
        ({"status": "Temporarily-Closed"}, CenterStatus.TEMPORARILY_CLOSED),
        ({"status": "permanently closed"}, CenterStatus.CLOSED),
        ({"status": "CLOSED"}, CenterStatus.CLOSED),
        ({"status": "inactive"}, CenterStatus.INACTIVE),
        ({"status": 0}, CenterStatus.INACTIVE),
        ({"status": "open", "is_active": "0"}, CenterStatus.ACTIVE),
        ({"status": "closed", "coming_soon": "yes"}, CenterStatus.CLOSED),
        ({"coming_soon": "1", "active": True}, CenterStatus.COMING_SOON),
        ({"comingSoon": "no"}, CenterStatus.ACTIVE),
        ({"is_active": "false"}, CenterStatus.INACTIVE),
        ({"active": "no"}, CenterStatus.INACTIVE),
        ({"isActive": "yes"}, CenterStatus.ACTIVE),
        ({"temporarily_closed": "true"}, CenterStatus.TEMPORARILY_CLOSED),
        ({"closed": 1}, CenterStatus.CLOSED),
        ({"closed": "1", "is_active": "0"}, CenterStatus.CLOSED),
        ({"status": "mystery", "active": "0"}, CenterStatus.INACTIVE),
    ],
)
def test_center_status(record_fields, expected):
    center = _center(_located(**record_fields))

    assert center.status is expected
    assert center.is_active is (expected is CenterStatus.ACTIVE)


def test_center_unknown_status_logged(caplog):
    with caplog.at_level(logging.WARNING):
        center = _center(_located(status="mystery"))

    assert center.status is CenterStatus.ACTIVE
    assert "unknown status" in caplog.text
