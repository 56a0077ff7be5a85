"""Uses both services through clients generated from their own OpenAPI documents
(openapi-python-client), the way an API consumer would: the CRUD happy path on items, the
timezone lookups, and one error of each class. Every answer must carry a status the document
declares for that operation, and every error a problem+json body whose `status` is the answer's.

Usage: python contract_client.py CLIENTS_DIR ITEMS_URL TIMEZONES_URL API_KEY
CLIENTS_DIR holds the generated packages items_client and timezones_client and the documents
items.json and timezones.json they were generated from."""

import datetime
import json
import pathlib
import sys
import uuid

CLIENTS_DIR, ITEMS_URL, TIMEZONES_URL, API_KEY = sys.argv[1:5]
sys.path.insert(0, CLIENTS_DIR)

# The generated packages: their module names are the documents' operationIds.
from items_client import AuthenticatedClient, Client  # noqa: E402
from items_client.api.items import (  # noqa: E402
    create_item,
    delete_item,
    delete_items_by_tag,
    get_item,
    list_items,
    replace_item,
    update_item,
)
from items_client.models import ItemInput, ItemPatchInput  # noqa: E402
from timezones_client import Client as TimezonesClient  # noqa: E402
from timezones_client.api.conversion import convert_time  # noqa: E402
from timezones_client.api.timezones import get_zone, list_zones  # noqa: E402

DOCUMENTS = {
    name: json.loads(pathlib.Path(CLIENTS_DIR, f"{name}.json").read_text())
    for name in ("items", "timezones")
}
checked = []


def declared(document, method, path):
    return set(DOCUMENTS[document]["paths"][path][method]["responses"])


def expect(response, status, document, method, path):
    """The answer has `status`, the document declares it for the operation, and an error is a
    problem document saying the same status."""
    what = f"{method.upper()} {path}"
    assert response.status_code == status, (
        f"{what}: expected {status}, got {response.status_code}: {response.content[:300]!r}"
    )
    assert str(status) in declared(document, method, path), (
        f"{what} answered {status}, which its OpenAPI document does not declare"
    )
    if status >= 400:
        content_type = response.headers.get("content-type", "")
        assert content_type.startswith("application/problem+json"), (what, content_type)
        # Each generated package has its own Problem model.
        assert type(response.parsed).__name__ == "Problem", (what, response.parsed)
        assert response.parsed.status == status, (what, response.parsed.to_dict())
        assert response.parsed.title and response.parsed.detail, (what, response.parsed)
    checked.append(f"{what} {status}")
    return response.parsed


items = AuthenticatedClient(
    base_url=ITEMS_URL, token=API_KEY, prefix="", auth_header_name="X-API-Key"
)
# Clients that reuse their connections: a request refused before its body is read (no key, a
# wrong key, a body over the limit) is answered with `Connection: close` over HTTP/1.1, so the
# next request goes out on a new connection instead of into a closed one.
anonymous = Client(base_url=ITEMS_URL)
refused_body = AuthenticatedClient(
    base_url=ITEMS_URL, token=API_KEY, prefix="", auth_header_name="X-API-Key",
)
wrong_key = AuthenticatedClient(
    base_url=ITEMS_URL, token="not-the-key-0123456789", prefix="", auth_header_name="X-API-Key",
)
timezones = TimezonesClient(base_url=TIMEZONES_URL)

# The CRUD happy path.
created = expect(
    create_item.sync_detailed(
        client=items,
        body=ItemInput(name="contract item", description="from the generated client", tags=["a"]),
        idempotency_key=str(uuid.uuid4()),
    ),
    201, "items", "post", "/v1/items",
)
item_id = created.id
read = expect(get_item.sync_detailed(item_id, client=anonymous, tz="Europe/Paris"),
              200, "items", "get", "/v1/items/{id}")
assert read.name == "contract item" and read.local.zone == "Europe/Paris", read.to_dict()
page = expect(list_items.sync_detailed(client=anonymous, tag="a", limit=10),
              200, "items", "get", "/v1/items")
assert [i.id for i in page.items] == [item_id], page.to_dict()
replaced = expect(
    replace_item.sync_detailed(
        item_id, client=items, body=ItemInput(name="replaced", tags=["b"]), if_match='"1"'
    ),
    200, "items", "put", "/v1/items/{id}",
)
assert replaced.version == 2 and replaced.tags == ["b"], replaced.to_dict()
patched = expect(
    update_item.sync_detailed(item_id, client=items, body=ItemPatchInput(name="patched")),
    200, "items", "patch", "/v1/items/{id}",
)
assert patched.name == "patched" and patched.tags == ["b"], patched.to_dict()

# One error of each class.
expect(list_items.sync_detailed(client=anonymous, cursor="not-a-cursor"),
       400, "items", "get", "/v1/items")
expect(create_item.sync_detailed(client=anonymous, body=ItemInput(name="x")),
       401, "items", "post", "/v1/items")
expect(create_item.sync_detailed(client=wrong_key, body=ItemInput(name="x")),
       403, "items", "post", "/v1/items")
expect(get_item.sync_detailed(str(uuid.uuid4()), client=anonymous),
       404, "items", "get", "/v1/items/{id}")
expect(replace_item.sync_detailed(item_id, client=items, body=ItemInput(name="stale"), if_match='"1"'),
       412, "items", "put", "/v1/items/{id}")
expect(create_item.sync_detailed(client=refused_body, body=ItemInput(name="big", description="d" * 70_000)),
       413, "items", "post", "/v1/items")
invalid = expect(create_item.sync_detailed(client=items, body=ItemInput(name="", tags=["no spaces"])),
                 422, "items", "post", "/v1/items")
assert {e.field for e in invalid.errors} == {"name", "tags[0]"}, invalid.to_dict()
# A body that is not JSON: the generated client always sends JSON, so this one goes by hand.
not_json = refused_body.get_httpx_client().post(
    "/v1/items", content=b"name=x", headers={"content-type": "application/x-www-form-urlencoded"}
)
assert not_json.status_code == 415 and "415" in declared("items", "post", "/v1/items"), not_json

expect(delete_item.sync_detailed(item_id, client=items), 204, "items", "delete", "/v1/items/{id}")
expect(get_item.sync_detailed(item_id, client=anonymous), 404, "items", "get", "/v1/items/{id}")

# A tagged delete, how a load run removes what it made: a page at a time until 0.
run_tag = f"contract-{uuid.uuid4().hex[:8]}"
for n in range(3):
    expect(create_item.sync_detailed(client=items, body=ItemInput(name=f"run {n}", tags=[run_tag])),
           201, "items", "post", "/v1/items")
deleted = [expect(delete_items_by_tag.sync_detailed(client=items, tag=run_tag, limit=2),
                  200, "items", "delete", "/v1/items").deleted for _ in range(3)]
assert deleted == [2, 1, 0], deleted
expect(delete_items_by_tag.sync_detailed(client=anonymous, tag=run_tag), 401, "items", "delete", "/v1/items")

# Timezones: the lookups, and their errors.
europe = expect(list_zones.sync_detailed(client=timezones, region="Europe", limit=5),
                200, "timezones", "get", "/v1/timezones")
assert len(europe.zones) == 5 and all(z.startswith("Europe/") for z in europe.zones), europe
zone = expect(get_zone.sync_detailed("Asia/Kolkata", client=timezones),
              200, "timezones", "get", "/v1/timezones/{zone}")
assert zone.utc_offset == "+05:30", zone.to_dict()
converted = expect(
    convert_time.sync_detailed(client=timezones, to="America/New_York",
                               at=[datetime.datetime(2026, 7, 1, 12, tzinfo=datetime.timezone.utc)]),
    200, "timezones", "get", "/v1/convert",
)
assert converted.conversions[0].to.local_time == "2026-07-01T08:00:00-04:00", converted.to_dict()
expect(list_zones.sync_detailed(client=timezones, limit=0), 400, "timezones", "get", "/v1/timezones")
expect(get_zone.sync_detailed("Nowhere/City", client=timezones),
       404, "timezones", "get", "/v1/timezones/{zone}")
# The generator reads `naive-date-time` as a plain string. New York's clocks skip 02:30 then.
expect(
    convert_time.sync_detailed(
        client=timezones, to="UTC", from_="America/New_York", local="2026-03-08T02:30:00"
    ),
    422, "timezones", "get", "/v1/convert",
)

# Last, as it shuts this client out for a minute: wrong keys past AUTH_FAILURES_PER_MINUTE
# (30 by default) are answered 429 with Retry-After.
for _ in range(30):
    create_item.sync_detailed(client=wrong_key, body=ItemInput(name="x"))
limited = create_item.sync_detailed(client=wrong_key, body=ItemInput(name="x"))
expect(limited, 429, "items", "post", "/v1/items")
assert int(limited.headers["retry-after"]) >= 1, limited.headers

print(f"openapi contract: {len(checked)} answers through the generated clients, each as documented")
