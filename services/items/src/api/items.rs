use chrono::{DateTime, Utc};
use platform::Errors;
use platform::http::RequestId;
use platform::json_body::JsonBody;
use poem::web::Data;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::MaybeUndefined;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde::Serialize;
use uuid::Uuid;

use platform::auth::ApiKeyAuth;
use platform::http::Deadline;

use super::auth::WriteGuard;
use super::errors::{
    CreateErrors, DeleteErrors, DeleteTaggedErrors, ListErrors, ReadErrors, UpdateErrors,
};
use super::strict_string::{StrictList, StrictString};
use super::{ApiTags, parse_zone};
use crate::domain::{
    DESCRIPTION_MAX_CHARS, Description, IDEMPOTENCY_KEY_MAX_CHARS, IdempotencyKey, ItemFields,
    ItemName, ItemPatch, NAME_MAX_CHARS, NameNeedle, Precondition, TAG_MAX_CHARS, TAGS_MAX, Tag,
    Tags, etag,
};
use crate::error::ApiError;
use crate::local_time::{LocalClock, Rendered};
use crate::store::{Item, ListQuery, Store};

pub struct ItemsApi {
    store: Store,
    clock: LocalClock,
    writes: WriteGuard,
}

type Name = StrictString<NAME_MAX_CHARS>;
type DescriptionText = StrictString<DESCRIPTION_MAX_CHARS>;
type TagList = StrictList<StrictString<TAG_MAX_CHARS>, TAGS_MAX>;
/// A quoted key: the domain's limit plus its two quotes.
type IdempotencyKeyText = StrictString<{ IDEMPOTENCY_KEY_MAX_CHARS + 2 }>;
/// Item ids and cursors: the longest text `Uuid::parse_str` takes is the `urn:uuid:` form.
type UuidText = StrictString<45>;
/// `ZoneName::parse` takes 1–64 bytes.
type ZoneText = StrictString<64>;
/// `/v1/items/` and a hyphenated UUID.
type LocationText = StrictString<46>;
/// A version (a positive `i64`, at most 19 digits) in quotes.
type EtagText = StrictString<21>;
/// `timezones-unavailable` or `timezones-circuit-open`.
pub(super) type DegradedText = StrictString<22>;

impl ItemsApi {
    pub fn new(store: Store, clock: LocalClock, writes: WriteGuard) -> Self {
        Self {
            store,
            clock,
            writes,
        }
    }
}

/// A new item, or the full new state of an existing one.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
struct ItemInput {
    /// 1–100 characters; surrounding spaces are trimmed first.
    name: Name,
    /// Up to 2000 characters.
    description: Option<DescriptionText>,
    /// Up to 10 tags of 1–32 characters: a-z, 0-9 and `-` (upper case is lowered, surrounding
    /// spaces trimmed and duplicates dropped first).
    #[oai(default)]
    tags: TagList,
}

fn strings<const MAX: usize>(values: &[StrictString<MAX>]) -> Vec<String> {
    values.iter().map(|v| v.0.clone()).collect()
}

impl ItemInput {
    fn parse(&self) -> Result<ItemFields, ApiError> {
        let description = self.description.as_ref().map(|d| d.0.as_str());
        ItemFields::parse(&self.name.0, description, &strings(&self.tags.0))
            .map_err(ApiError::Validation)
    }
}

/// A partial update (merge-patch semantics): absent fields stay, `description: null` removes it.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
struct ItemPatchInput {
    /// As in `ItemInput`.
    name: Option<Name>,
    /// As in `ItemInput`; `null` removes it.
    description: MaybeUndefined<DescriptionText>,
    /// As in `ItemInput`; replaces all the tags.
    tags: Option<TagList>,
}

impl ItemPatchInput {
    fn parse(&self) -> Result<ItemPatch, ApiError> {
        let mut errors = Vec::new();
        let name = self
            .name
            .as_ref()
            .map(|n| ItemName::parse(&n.0))
            .transpose()
            .map_err(|e| errors.push(e))
            .ok()
            .flatten();
        let description = match &self.description {
            MaybeUndefined::Undefined => None,
            MaybeUndefined::Null => Some(None),
            MaybeUndefined::Value(d) => Description::parse(&d.0)
                .map(|d| Some(Some(d)))
                .map_err(|e| errors.push(e))
                .ok()
                .flatten(),
        };
        let tags = self
            .tags
            .as_ref()
            .map(|t| Tags::parse(&strings(&t.0)))
            .transpose()
            .map_err(|e| errors.extend(e))
            .ok()
            .flatten();
        if errors.is_empty() {
            Ok(ItemPatch {
                name,
                description,
                tags,
            })
        } else {
            Err(ApiError::Validation(errors))
        }
    }
}

/// An item's timestamps as the clocks of the zone asked for with `tz` show them.
#[derive(Debug, Object, Serialize)]
struct LocalTimes {
    /// The IANA zone asked for, or the fallback offset used.
    #[oai(validator(max_length = 64))]
    zone: String,
    /// RFC 3339, with the zone's offset.
    #[oai(validator(max_length = 40))]
    created_at: String,
    /// RFC 3339, with the zone's offset.
    #[oai(validator(max_length = 40))]
    updated_at: String,
    /// `timezones`, or `fallback` when the timezones service was unavailable.
    #[oai(validator(max_length = 9))]
    source: String,
    /// True when rendered at the fallback `TIMEZONE_OFFSET` instead of the zone asked for.
    degraded: bool,
}

// Written by serde (`JsonBody`), described by poem-openapi: each `skip_serializing_if_is_none`
// has its serde twin. (A `///` comment here would join the schema's description.)
#[derive(Debug, Object, Serialize)]
#[oai(rename = "Item")]
struct ItemBody {
    /// UUIDv7: ids sort in creation order.
    #[oai(validator(max_length = 36))]
    id: String,
    #[oai(validator(max_length = 100))]
    name: String,
    #[oai(skip_serializing_if_is_none, validator(max_length = 2000))]
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    tags: TagList,
    /// Increases by one on every change; the `ETag` is this number in quotes.
    #[oai(validator(minimum(value = "1"), maximum(value = "9223372036854775807")))]
    version: i64,
    #[serde(serialize_with = "platform::json_body::rfc3339")]
    created_at: DateTime<Utc>,
    #[serde(serialize_with = "platform::json_body::rfc3339")]
    updated_at: DateTime<Utc>,
    /// Present when the request asked for a zone with `tz`.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    local: Option<LocalTimes>,
}

impl ItemBody {
    fn new(item: Item, local: Option<LocalTimes>) -> Self {
        Self {
            id: item.id.to_string(),
            name: item.fields.name.as_str().to_owned(),
            description: item.fields.description.map(|d| d.as_str().to_owned()),
            tags: StrictList(
                item.fields
                    .tags
                    .iter()
                    .map(|t| StrictString(t.as_str().to_owned()))
                    .collect(),
            ),
            version: item.version,
            created_at: item.created_at,
            updated_at: item.updated_at,
            local,
        }
    }
}

#[derive(Debug, Object, Serialize)]
struct ItemPage {
    /// At most `limit` items.
    #[oai(validator(max_items = 100))]
    items: Vec<ItemBody>,
    /// Pass as `cursor` to get the next page; absent on the last page. A page filtered by
    /// `name` may hold fewer than `limit` items (even none) and still have a cursor: it
    /// stopped after reading 5,000 items (or candidates from the name index), so follow the
    /// cursor.
    #[oai(skip_serializing_if_is_none, validator(max_length = 36))]
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

#[derive(ApiResponse)]
enum CreateItemResponse {
    /// Created; or, for a repeated `Idempotency-Key` with the same body, the first answer again.
    #[oai(status = 201)]
    Created(
        JsonBody<ItemBody>,
        #[oai(header = "Location")] LocationText,
        #[oai(header = "ETag")] EtagText,
        /// `true` when this is the stored answer to an earlier request with the same
        /// `Idempotency-Key`; no item was created by this request.
        #[oai(header = "Idempotent-Replayed")]
        Option<StrictString<4>>,
    ),
}

#[derive(ApiResponse)]
enum ListItemsResponse {
    /// One page of items in creation order.
    #[oai(status = 200)]
    Ok(
        JsonBody<ItemPage>,
        /// Present when local times fell back to `TIMEZONE_OFFSET`: `timezones-unavailable`
        /// or `timezones-circuit-open`.
        #[oai(header = "Meridian-Degraded")]
        Option<DegradedText>,
    ),
}

/// The answer of a read or update: the item and its current `ETag`.
#[derive(ApiResponse)]
enum ItemResponse {
    /// The item as it is now.
    #[oai(status = 200)]
    Ok(
        JsonBody<ItemBody>,
        #[oai(header = "ETag")] EtagText,
        /// Present when local times fell back to `TIMEZONE_OFFSET`: `timezones-unavailable`
        /// or `timezones-circuit-open`.
        #[oai(header = "Meridian-Degraded")]
        Option<DegradedText>,
    ),
}

#[derive(ApiResponse)]
enum DeleteItemResponse {
    /// Deleted.
    #[oai(status = 204)]
    NoContent,
}

#[derive(Debug, Object)]
struct DeletedItems {
    /// How many items this request deleted: fewer than `limit` (0 at the end) when no more
    /// items had the tag.
    #[oai(validator(minimum(value = "0"), maximum(value = "1000")))]
    deleted: u32,
}

#[derive(ApiResponse)]
enum DeleteItemsResponse {
    /// Deleted up to `limit` of the tagged items.
    #[oai(status = 200)]
    Ok(Json<DeletedItems>),
}

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Items")]
impl ItemsApi {
    /// Create an item.
    ///
    /// Safe to retry with an `Idempotency-Key`: within 24 hours, the same key
    /// with the same body answers the first response again (same id, status and body, plus
    /// `Idempotent-Replayed: true`) without creating another item; the same key with a
    /// different body is 422. Concurrent requests with one key create one item: the later
    /// ones wait for the first and answer its item. Needs the API key; writes are rate-limited
    /// per key.
    ///
    /// An `Idempotency-Key` is scoped to the deployment: one namespace for every client and
    /// every API key. A retry sent with the next API key during a key rotation replays the
    /// answer to the one sent with the current key. Clients sharing a deployment must make
    /// their keys unique (a UUID per logical request), since another client's key with the
    /// same value is the same key.
    #[oai(path = "/items", method = "post", operation_id = "createItem")]
    async fn create_item(
        &self,
        auth: ApiKeyAuth,
        /// A unique string per logical request, e.g. a UUID: `"8e03978e-…"` (a
        /// structured-field string, as in the IETF httpapi draft) or bare. 1–255 visible
        /// ASCII characters.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKeyText>>,
        body: Json<ItemInput>,
        request: &poem::Request,
    ) -> Result<CreateItemResponse, Errors<CreateErrors>> {
        self.writes.check(&auth)?;
        // A value that is not visible ASCII reaches `Header` as absent: check the raw header,
        // so such a key is refused rather than silently ignored.
        let raw_key = match (&idempotency_key.0, request.headers().get(IDEMPOTENCY_KEY)) {
            (Some(key), _) => Some(key.0.as_str()),
            (None, Some(_unreadable)) => Some(""),
            (None, None) => None,
        };
        let key = raw_key
            .map(IdempotencyKey::parse)
            .transpose()
            .map_err(|e| ApiError::BadRequest(format!("Idempotency-Key {}", e.message)))?;
        let fields = body.0.parse()?;
        let created = self
            .store
            .create(&fields, key.as_ref())
            .await
            .map_err(ApiError::from)?;
        let item = created.item;
        let location = format!("/v1/items/{}", item.id);
        let etag = StrictString(etag(item.version));
        Ok(CreateItemResponse::Created(
            JsonBody(ItemBody::new(item, None)),
            StrictString(location),
            etag,
            created.replayed.then(|| StrictString("true".to_owned())),
        ))
    }

    /// List items in creation order, a page at a time.
    ///
    /// Filter by `tag` or by text in the `name`; follow `next_cursor` for the next page. With
    /// `tz`, each item also carries its timestamps in that zone. Needs no key.
    ///
    /// Pages follow item ids, which are taken when a create starts. On PostgreSQL two creates
    /// running at once can be committed out of order: an item whose create commits after a
    /// page past its id was read is not on the pages that follow that cursor (a new walk
    /// from the start has it). A create commits within `REQUEST_TIMEOUT_MS` (5 s by default)
    /// of taking its id, so items older than that when a page is read are never missed. On
    /// SQLite ids are taken in commit order and a walk misses nothing.
    #[oai(path = "/items", method = "get", operation_id = "listItems")]
    #[allow(clippy::too_many_arguments)] // poem-openapi takes each query parameter as one
    async fn list_items(
        &self,
        /// Page size, 1–100.
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "100"))
        )]
        limit: Query<u32>,
        /// `next_cursor` from the previous page.
        cursor: Query<Option<UuidText>>,
        /// Only items with this tag.
        tag: Query<Option<StrictString<TAG_MAX_CHARS>>>,
        /// Only items whose name contains this text, ignoring the case of ASCII letters
        /// (other letters match only themselves, the same on both databases; `%` and `_` are
        /// literal; control characters are refused with 422). Three or more characters use an
        /// index; a page reads at most 5,000 items, or candidates from the index (see
        /// `next_cursor`), and stops at the request's deadline (503).
        #[oai(validator(min_length = 1, max_length = 100))]
        name: Query<Option<String>>,
        /// Also render timestamps in this IANA zone (one call to timezones per page).
        tz: Query<Option<ZoneText>>,
        request_id: Data<&RequestId>,
        deadline: Data<&Deadline>,
    ) -> Result<ListItemsResponse, Errors<ListErrors>> {
        let after = cursor
            .0
            .as_ref()
            .map(|c| c.0.as_str())
            .map(|c| {
                Uuid::parse_str(c).map_err(|_| {
                    ApiError::BadRequest(format!("cursor {c:?} is not a cursor from this API"))
                })
            })
            .transpose()?;
        let tag = tag
            .0
            .as_ref()
            .map(|t| Tag::parse(&t.0, "tag"))
            .transpose()
            .map_err(ApiError::from)?;
        let name = name
            .0
            .as_deref()
            .map(NameNeedle::parse)
            .transpose()
            .map_err(ApiError::from)?;
        let zone = parse_zone(tz.0.as_ref().map(|z| z.0.as_str()))?;
        // One extra row tells whether another page exists.
        let page = self
            .store
            .list(&ListQuery {
                limit: limit.0 + 1,
                after,
                tag,
                name_contains: name,
                deadline: Some(deadline.0.0),
            })
            .await
            .map_err(ApiError::from)?;
        let mut items = page.items;
        let has_more = items.len() > limit.0 as usize;
        items.truncate(limit.0 as usize);
        let next_cursor = if has_more {
            items.last().map(|i| i.id)
        } else {
            page.examined_up_to
        }
        .map(|id| id.to_string());

        let mut degraded = None;
        let local = match (&zone, items.is_empty()) {
            (Some(zone), false) => {
                let instants: Vec<_> = items
                    .iter()
                    .flat_map(|i| [i.created_at, i.updated_at])
                    .collect();
                let rendered = self
                    .clock
                    .render(Some(zone), &instants, deadline.0.0, Some(&request_id.0.0))
                    .await?;
                degraded = rendered
                    .source
                    .degraded_reason()
                    .map(|r| StrictString(r.to_owned()));
                split_local_times(&rendered)
            }
            _ => Vec::new(),
        };
        let mut local = local.into_iter();
        let items = items
            .into_iter()
            .map(|item| ItemBody::new(item, local.next()))
            .collect();
        Ok(ListItemsResponse::Ok(
            JsonBody(ItemPage { items, next_cursor }),
            degraded,
        ))
    }

    /// Read an item.
    ///
    /// Its `ETag` is what `If-Match` takes on updates and deletes. With `tz`, the item also
    /// carries its timestamps in that zone. Needs no key.
    #[oai(path = "/items/:id", method = "get", operation_id = "getItem")]
    async fn get_item(
        &self,
        id: Path<UuidText>,
        /// Also render timestamps in this IANA zone.
        tz: Query<Option<ZoneText>>,
        request_id: Data<&RequestId>,
        deadline: Data<&Deadline>,
    ) -> Result<ItemResponse, Errors<ReadErrors>> {
        let zone = parse_zone(tz.0.as_ref().map(|z| z.0.as_str()))?;
        let id = &id.0.0;
        let item = self
            .store
            .get(parse_id(id)?)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::ItemNotFound(id.clone()))?;
        let (local, degraded) = match &zone {
            Some(zone) => {
                let instants = [item.created_at, item.updated_at];
                let rendered = self
                    .clock
                    .render(Some(zone), &instants, deadline.0.0, Some(&request_id.0.0))
                    .await?;
                let degraded = rendered
                    .source
                    .degraded_reason()
                    .map(|r| StrictString(r.to_owned()));
                (split_local_times(&rendered).into_iter().next(), degraded)
            }
            None => (None, None),
        };
        let etag = StrictString(etag(item.version));
        Ok(ItemResponse::Ok(
            JsonBody(ItemBody::new(item, local)),
            etag,
            degraded,
        ))
    }

    /// Replace an item's fields.
    ///
    /// With `If-Match`, only if the item is still at that version (412 otherwise). Needs the
    /// API key; writes are rate-limited per key.
    #[oai(path = "/items/:id", method = "put", operation_id = "replaceItem")]
    async fn replace_item(
        &self,
        auth: ApiKeyAuth,
        id: Path<UuidText>,
        /// An `ETag` from a read; 412 if the item changed since.
        #[oai(name = "If-Match")]
        if_match: Header<Option<String>>,
        body: Json<ItemInput>,
    ) -> Result<ItemResponse, Errors<UpdateErrors>> {
        self.writes.check(&auth)?;
        let fields = body.0.parse()?;
        let precondition = Precondition::from_if_match(if_match.0.as_deref());
        let item = self
            .store
            .update(parse_id(&id.0.0)?, precondition, move |_| fields.clone())
            .await
            .map_err(ApiError::from)?;
        let etag = StrictString(etag(item.version));
        Ok(ItemResponse::Ok(
            JsonBody(ItemBody::new(item, None)),
            etag,
            None,
        ))
    }

    /// Change some of an item's fields (merge-patch semantics).
    ///
    /// With `If-Match`, only if the item is still at that version (412 otherwise). Needs the
    /// API key; writes are rate-limited per key.
    #[oai(path = "/items/:id", method = "patch", operation_id = "updateItem")]
    async fn patch_item(
        &self,
        auth: ApiKeyAuth,
        id: Path<UuidText>,
        /// An `ETag` from a read; 412 if the item changed since.
        #[oai(name = "If-Match")]
        if_match: Header<Option<String>>,
        body: Json<ItemPatchInput>,
    ) -> Result<ItemResponse, Errors<UpdateErrors>> {
        self.writes.check(&auth)?;
        let patch = body.0.parse()?;
        let precondition = Precondition::from_if_match(if_match.0.as_deref());
        let item = self
            .store
            .update(parse_id(&id.0.0)?, precondition, move |current| {
                patch.apply_to(current)
            })
            .await
            .map_err(ApiError::from)?;
        let etag = StrictString(etag(item.version));
        Ok(ItemResponse::Ok(
            JsonBody(ItemBody::new(item, None)),
            etag,
            None,
        ))
    }

    /// Delete an item.
    ///
    /// With `If-Match`, only if the item is still at that version (412 otherwise). Needs the
    /// API key; writes are rate-limited per key.
    #[oai(path = "/items/:id", method = "delete", operation_id = "deleteItem")]
    async fn delete_item(
        &self,
        auth: ApiKeyAuth,
        id: Path<UuidText>,
        /// An `ETag` from a read; 412 if the item changed since.
        #[oai(name = "If-Match")]
        if_match: Header<Option<String>>,
    ) -> Result<DeleteItemResponse, Errors<DeleteErrors>> {
        self.writes.check(&auth)?;
        let precondition = Precondition::from_if_match(if_match.0.as_deref());
        self.store
            .delete(parse_id(&id.0.0)?, precondition)
            .await
            .map_err(ApiError::from)?;
        Ok(DeleteItemResponse::NoContent)
    }

    /// Delete the items with a tag, oldest first, up to `limit` a request.
    ///
    /// Repeat until it answers `deleted: 0` to delete every item with the tag: how a load run
    /// removes what it created (every item it makes carries the run's tag), however many.
    /// The tag is required: there is no delete-everything. Needs the API key; each request
    /// is one write for the rate limit.
    #[oai(path = "/items", method = "delete", operation_id = "deleteItemsByTag")]
    async fn delete_items_by_tag(
        &self,
        auth: ApiKeyAuth,
        /// Only items with this tag (required).
        tag: Query<StrictString<TAG_MAX_CHARS>>,
        /// The most items this request deletes, 1–1000.
        #[oai(
            default = "default_delete_limit",
            validator(minimum(value = "1"), maximum(value = "1000"))
        )]
        limit: Query<u32>,
    ) -> Result<DeleteItemsResponse, Errors<DeleteTaggedErrors>> {
        self.writes.check(&auth)?;
        let tag = Tag::parse(&tag.0.0, "tag").map_err(ApiError::from)?;
        let deleted = self
            .store
            .delete_tagged(&tag, limit.0)
            .await
            .map_err(ApiError::from)?;
        Ok(DeleteItemsResponse::Ok(Json(DeletedItems {
            // At most `limit`, itself at most 1000.
            deleted: u32::try_from(deleted).unwrap_or(u32::MAX),
        })))
    }
}

/// An id that is not a UUID names no item: 404, like any other unknown id.
fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::ItemNotFound(raw.to_owned()))
}

/// Pairs up rendered (created_at, updated_at) times, one `LocalTimes` per item.
fn split_local_times(rendered: &Rendered) -> Vec<LocalTimes> {
    rendered
        .times
        .chunks_exact(2)
        .map(|pair| LocalTimes {
            zone: rendered.zone.clone(),
            created_at: pair[0].clone(),
            updated_at: pair[1].clone(),
            source: rendered.source.as_str().to_owned(),
            degraded: rendered.source.is_degraded(),
        })
        .collect()
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";

fn default_limit() -> u32 {
    20
}

fn default_delete_limit() -> u32 {
    1000
}
