-- Filters that use an index, and idempotent creates. Runs in one transaction with the tag
-- backfill that follows it in sqlite.rs (tags are split there, in Rust).
--
-- items gets an integer key `seq` in id order: the trigram index (FTS5) and the tag table need
-- an integer to point at, and since ids are UUIDv7 handed out in order by the one writer,
-- seq order is id order, so pages stay in creation order. The copy is made in id order.
CREATE TABLE items_v2 (
    seq         INTEGER PRIMARY KEY,
    id          TEXT    NOT NULL UNIQUE,
    name        TEXT    NOT NULL,
    description TEXT,
    tags        TEXT    NOT NULL,
    version     BIGINT  NOT NULL,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);
INSERT INTO items_v2 (id, name, description, tags, version, created_at, updated_at)
    SELECT id, name, description, tags, version, created_at, updated_at FROM items ORDER BY id;
DROP TABLE items;
ALTER TABLE items_v2 RENAME TO items;

-- One row per (tag, item): `?tag=` reads one index range, already in page order.
CREATE TABLE item_tags (
    tag TEXT    NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (tag, seq)
) WITHOUT ROWID;

-- Names by trigram, case-folded: `?name=` (3+ characters) reads the items whose names hold
-- every trigram of the needle, in seq order. The exact LIKE check runs on those rows only.
CREATE VIRTUAL TABLE item_names USING fts5(
    name, content = 'items', content_rowid = 'seq', tokenize = 'trigram'
);
INSERT INTO item_names (item_names) VALUES ('rebuild');
CREATE TRIGGER item_names_after_insert AFTER INSERT ON items BEGIN
    INSERT INTO item_names (rowid, name) VALUES (new.seq, new.name);
END;
CREATE TRIGGER item_names_after_delete AFTER DELETE ON items BEGIN
    INSERT INTO item_names (item_names, rowid, name) VALUES ('delete', old.seq, old.name);
END;
CREATE TRIGGER item_names_after_update AFTER UPDATE OF name ON items BEGIN
    INSERT INTO item_names (item_names, rowid, name) VALUES ('delete', old.seq, old.name);
    INSERT INTO item_names (rowid, name) VALUES (new.seq, new.name);
END;

-- What each Idempotency-Key remembers: the request's canonical fields and the item it made.
CREATE TABLE idempotency_keys (
    key        TEXT    PRIMARY KEY,
    request    TEXT    NOT NULL,
    item_id    TEXT    NOT NULL,
    created_at BIGINT  NOT NULL
) WITHOUT ROWID;
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
