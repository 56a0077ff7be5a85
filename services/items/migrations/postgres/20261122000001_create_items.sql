-- One schema for SQLite and PostgreSQL: only types both understand the same way.
-- id: UUIDv7 text, so ordering by id is creation order and pagination cursors are stable.
-- tags: normalised tags joined by ',' (tags cannot contain ','), filtered with LIKE.
-- Timestamps: microseconds since the Unix epoch, UTC.
CREATE TABLE items (
    id          TEXT    PRIMARY KEY,
    name        TEXT    NOT NULL,
    description TEXT,
    tags        TEXT    NOT NULL,
    version     BIGINT  NOT NULL,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);
