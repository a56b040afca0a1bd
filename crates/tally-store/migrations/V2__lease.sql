-- tally's log on PostgreSQL, version 2: the term becomes a lease, so several tally nodes can
-- share one database with exactly one of them appending.
--
-- The writer renews `expires_at` (the database's clock, never a node's) with every append and
-- when idle; another node takes the next term only once it has passed:
--   UPDATE tally_log_head SET term = term + 1, holder = <node>, holder_url = <its URL>, ...
--   WHERE expires_at < now()
-- Every append stays fenced by `WHERE term = <ours>` (version 1), so a node that lost its lease
-- (paused, cut off) can never commit again. `holder_url` is where the other nodes forward
-- writes. A version 1 row gets `-infinity`: free for the first node that starts.
ALTER TABLE tally_log_head
    ADD COLUMN expires_at timestamptz NOT NULL DEFAULT '-infinity',
    ADD COLUMN holder_url text        NOT NULL DEFAULT '';
