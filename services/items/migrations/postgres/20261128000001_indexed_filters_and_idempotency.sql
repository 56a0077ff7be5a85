-- Filters that use an index, and idempotent creates.

-- One row per (tag, item): `?tag=` reads one index range, already in page (id) order. The
-- items row keeps its comma-joined tags for reads. A trigger keeps item_tags in step with
-- every write to items, not this release's statements: during a canary the previous
-- release's pods go on writing items without knowing this table exists.
CREATE TABLE item_tags (
    tag     TEXT NOT NULL,
    item_id TEXT NOT NULL,
    PRIMARY KEY (tag, item_id)
);

CREATE FUNCTION items_sync_tags() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        -- By the old row's tags, so the delete reads the primary key, not the whole table.
        DELETE FROM item_tags
        WHERE item_id = OLD.id
          AND tag = ANY (string_to_array(OLD.tags, ','))
          AND (TG_OP = 'DELETE' OR NOT tag = ANY (string_to_array(NEW.tags, ',')));
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO item_tags (tag, item_id)
        SELECT DISTINCT tag, NEW.id FROM unnest(string_to_array(NEW.tags, ',')) AS tag
        WHERE tag <> ''
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;

-- CREATE TRIGGER waits for the writes in flight and holds new ones until this transaction
-- commits, so the copy below sees every row written without the trigger, and every row
-- written after it goes through the trigger: none is missed, none is copied twice.
CREATE TRIGGER items_sync_tags_on_insert_or_delete
    AFTER INSERT OR DELETE ON items
    FOR EACH ROW EXECUTE FUNCTION items_sync_tags();
CREATE TRIGGER items_sync_tags_on_update
    AFTER UPDATE OF tags ON items
    FOR EACH ROW WHEN (OLD.tags IS DISTINCT FROM NEW.tags)
    EXECUTE FUNCTION items_sync_tags();

INSERT INTO item_tags (tag, item_id)
    SELECT DISTINCT tag, id FROM items, unnest(string_to_array(tags, ',')) AS tag
    WHERE tag <> '';

-- pg_trgm is a trusted extension, so the database's owner may create it. Its index on names
-- is built by the next migration, concurrently.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- What each Idempotency-Key remembers: the request's canonical fields and the item it made.
CREATE TABLE idempotency_keys (
    key        TEXT   PRIMARY KEY,
    request    TEXT   NOT NULL,
    item_id    TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
