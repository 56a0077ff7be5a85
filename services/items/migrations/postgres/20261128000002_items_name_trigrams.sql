-- no-transaction
-- Names by trigram: `?name=` (LOWER(name) LIKE '%needle%') can use this index. Built
-- CONCURRENTLY, outside a transaction (the first line tells sqlx's migrator so), because a
-- plain CREATE INDEX holds off every write to items while it reads the whole table, and during
-- a canary the previous release's pods are still writing. It must be the file's only
-- statement: PostgreSQL runs a query string of several statements as one transaction.
-- If the build fails it leaves an invalid index behind and this migration is not recorded;
-- see docs/runbooks.md for the way out.
-- GIN queues new entries in a pending list that every search reads through until it is
-- merged; at the default 4 MB that list cost a rare-name search at 1M items 4.7 ms instead of
-- 1.2 ms (docs/performance.md), so it is kept at 256 kB: merged sooner, in smaller steps.
CREATE INDEX CONCURRENTLY items_name_trigrams ON items USING gin (LOWER(name) gin_trgm_ops)
    WITH (gin_pending_list_limit = 256);
