-- Filters that use an index, and idempotent creates.

-- One row per (tag, item): `?tag=` reads one index range, already in page (id) order. The
-- items row keeps its comma-joined tags for reads; items' writes keep both in one statement.
CREATE TABLE item_tags (
    tag     TEXT NOT NULL,
    item_id TEXT NOT NULL,
    PRIMARY KEY (tag, item_id)
);
INSERT INTO item_tags (tag, item_id)
    SELECT DISTINCT tag, id FROM items, unnest(string_to_array(tags, ',')) AS tag
    WHERE tags <> '';

-- Names by trigram: `?name=` (LOWER(name) LIKE '%needle%') can use this index; pg_trgm is a
-- trusted extension, so the database's owner may create it. GIN queues new entries in a
-- pending list that every search reads through until it is merged; at the default 4 MB that
-- list cost a rare-name search at 1M items 4.7 ms instead of 1.2 ms (docs/performance.md), so
-- it is kept at 256 kB: merged sooner, in smaller steps.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX items_name_trigrams ON items USING gin (LOWER(name) gin_trgm_ops)
    WITH (gin_pending_list_limit = 256);

-- What each Idempotency-Key remembers: the request's canonical fields and the item it made.
CREATE TABLE idempotency_keys (
    key        TEXT   PRIMARY KEY,
    request    TEXT   NOT NULL,
    item_id    TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
