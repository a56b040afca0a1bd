-- tally's log on PostgreSQL, version 1. Applied by tally at start-up (refinery, under an
-- advisory lock); never edited once released: a change is a new file V2__..., V3__...

-- The log itself: the same keys and the same v1 envelopes as the sled store (the key layout is
-- in crates/tally-store/src/keys.rs: 'm' meta, 'l'/'u'/'a' blocks of entity, usage and audit
-- records by first position, 't' table buckets, 's' base snapshot, 'r' reseed index). Byte for
-- byte what a sled store holds, so an export from one imports into the other unchanged.
CREATE TABLE tally_kv (
    key   bytea PRIMARY KEY,
    value bytea NOT NULL
);

-- One row: the counter and the fence of every append. Every write transaction updates it
-- WHERE term = <the writer's term> AND last_pos = <the head it decided on>, so appends are
-- numbered densely in commit order and a process that lost the right to write (another took a
-- newer term, or appended first) matches no row and rolls back.
CREATE TABLE tally_log_head (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    term        bigint      NOT NULL,
    holder      text        NOT NULL,
    epoch       bigint      NOT NULL,
    last_pos    bigint      NOT NULL,
    usage_floor bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO tally_log_head (term, holder, epoch, last_pos, usage_floor)
VALUES (0, '', 1, 0, 1);

-- Usage events in Cloud Controller's columns, written in the same transaction as the log
-- records they mirror (and removed with them by retention and compaction), for billing
-- queries in plain SQL. `seq` is the event's position in the log.
CREATE TABLE tally_usage_events (
    seq                                bigint PRIMARY KEY,
    guid                               text        NOT NULL,
    created_at                         timestamptz NOT NULL,
    state                              text        NOT NULL,
    previous_state                     text,
    instance_count                     bigint      NOT NULL,
    previous_instance_count            bigint,
    memory_in_mb_per_instance          bigint      NOT NULL,
    previous_memory_in_mb_per_instance bigint,
    app_guid                           text        NOT NULL,
    app_name                           text        NOT NULL,
    space_guid                         text        NOT NULL,
    space_name                         text        NOT NULL,
    org_guid                           text        NOT NULL,
    buildpack_guid                     text,
    buildpack_name                     text,
    package_state                      text,
    previous_package_state             text,
    parent_app_guid                    text,
    parent_app_name                    text,
    process_type                       text,
    task_guid                          text,
    task_name                          text
);
CREATE INDEX tally_usage_events_created_at ON tally_usage_events (created_at);
CREATE INDEX tally_usage_events_guid ON tally_usage_events (guid);

-- What the API serves: the current epoch's events (a purge-and-reseed moves the floor; the
-- older rows go with their log blocks).
CREATE VIEW app_usage_events AS
SELECT e.seq AS id, e.guid, e.created_at, e.state, e.previous_state, e.instance_count,
       e.previous_instance_count, e.memory_in_mb_per_instance,
       e.previous_memory_in_mb_per_instance, e.app_guid, e.app_name, e.space_guid,
       e.space_name, e.org_guid, e.buildpack_guid, e.buildpack_name, e.package_state,
       e.previous_package_state, e.parent_app_guid, e.parent_app_name, e.process_type,
       e.task_guid, e.task_name
FROM tally_usage_events e
WHERE e.seq >= (SELECT usage_floor FROM tally_log_head);
