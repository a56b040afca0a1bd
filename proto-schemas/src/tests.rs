//! Golden bytes: every version-1 record type has a committed fixture that must decode to the
//! same value and re-encode to the same bytes. To add a fixture for a new type, run
//! `TALLY_WRITE_GOLDEN=1 cargo test -p proto-schemas` once and commit the new file; existing
//! fixtures are never rewritten.

use std::path::PathBuf;

use proptest::prelude::*;

use crate::v1::*;
use crate::*;

fn guid(n: u8) -> GuidV1 {
    [n; 16]
}

fn app() -> AppV1 {
    AppV1 {
        guid: guid(1),
        name: "my-app".into(),
        space_guid: guid(2),
        stack_guid: guid(3),
        state: 0,
        memory_mb: 1024,
        instances: 3,
        disk_quota_mb: 1024,
        log_rate_limit: 1_048_576,
        buildpack: Some("ruby_buildpack".into()),
        command: None,
        health_check_type: 0,
        health_check_timeout: Some(60),
        health_check_http_endpoint: None,
        diego: true,
        enable_ssh: true,
        docker_image: None,
        docker_credentials: Some(DockerCredentialsV1 {
            username: Some("u".into()),
            password: None,
        }),
        environment_json: "{\"KEY\":\"val\"}".into(),
        production: false,
        console: false,
        debug: None,
        ports: Some(vec![8080]),
        version: guid(4),
        package: Some(PackageV1 {
            guid: guid(5),
            state: 0,
            sha256: "ab".into(),
            size_bytes: 10,
            created_at: 2,
        }),
        build: Some(BuildV1 {
            guid: guid(6),
            package_guid: guid(5),
            state: 1,
            error: None,
            created_at: 3,
        }),
        latest_droplet: Some(DropletV1 {
            guid: guid(7),
            package_guid: guid(5),
            buildpack_guid: Some(guid(8)),
            buildpack_name: Some("ruby_buildpack".into()),
            detected_start_command: "rackup".into(),
            created_at: 4,
        }),
        current_droplet_guid: Some(guid(7)),
        package_updated_at: Some(2),
        created_at: 1_714_557_600_000_000,
        updated_at: 1_714_557_600_000_001,
    }
}

fn usage() -> UsageEventV1 {
    UsageEventV1 {
        guid: guid(9),
        created_at: 1_714_557_600_123_456,
        state: 0,
        previous_state: Some(1),
        instance_count: 3,
        previous_instance_count: Some(1),
        memory_in_mb_per_instance: 1024,
        previous_memory_in_mb_per_instance: Some(512),
        app_guid: "01010101-0101-0101-0101-010101010101".into(),
        app_name: "my-app".into(),
        space_guid: guid(2),
        space_name: "dev".into(),
        org_guid: guid(10),
        buildpack_guid: Some(guid(8)),
        buildpack_name: Some("ruby_buildpack".into()),
        package_state: Some("STAGED".into()),
        previous_package_state: Some("UNKNOWN".into()),
        parent_app_guid: Some(guid(1)),
        parent_app_name: Some("my-app".into()),
        process_type: Some("web".into()),
        task_guid: None,
        task_name: None,
    }
}

fn audit() -> AuditEventV1 {
    AuditEventV1 {
        guid: guid(11),
        created_at: 5,
        event_type: "audit.app.update".into(),
        actor: "uaa-id-107".into(),
        actor_type: "user".into(),
        actor_name: "email@example.com".into(),
        actor_username: "user".into(),
        actee: guid(1),
        actee_type: "app".into(),
        actee_name: "my-app".into(),
        metadata: "{\"request\":{\"instances\":3}}".into(),
        space_guid: Some(guid(2)),
        organization_guid: Some(guid(10)),
    }
}

fn org() -> OrgV1 {
    OrgV1 {
        guid: guid(10),
        name: "acme".into(),
        created_at: 1,
        updated_at: 2,
    }
}

fn space() -> SpaceV1 {
    SpaceV1 {
        guid: guid(2),
        name: "dev".into(),
        org_guid: guid(10),
        created_at: 1,
        updated_at: 2,
    }
}

fn task() -> TaskV1 {
    TaskV1 {
        guid: guid(20),
        app_guid: guid(1),
        name: "migrate".into(),
        command: "rake db:migrate".into(),
        state: 1,
        memory_mb: 256,
        disk_mb: 1024,
        log_rate_limit: -1,
        sequence_id: 3,
        droplet_guid: guid(7),
        failure_reason: None,
        started_at: Some(5),
        created_at: 5,
        updated_at: 6,
    }
}

fn process() -> ProcessV1 {
    ProcessV1 {
        guid: guid(21),
        app_guid: guid(1),
        process_type: "worker".into(),
        state: 0,
        instances: 2,
        memory_mb: 512,
        disk_mb: 1024,
        log_rate_limit: -1,
        command: Some("bin/work --fast".into()),
        detected_command: "bin/work".into(),
        health_check_type: 1,
        health_check_timeout: Some(60),
        health_check_http_endpoint: None,
        version: guid(22),
        created_at: 5,
        updated_at: 6,
    }
}

/// (fixture name, the encoded sample). One entry per record type and enum variant.
fn membership() -> MembershipV1 {
    MembershipV1 {
        resource: guid(2),
        role: 4,
        user: "7c4e1f2a-0b1d-4c55-9a3e-2f1e0d9c8b7a".into(),
    }
}

fn members() -> MembersV1 {
    MembersV1 {
        resource: guid(2),
        members: vec![
            MemberV1 {
                role: 4,
                user: "alice".into(),
            },
            MemberV1 {
                role: 6,
                user: "bob".into(),
            },
        ],
    }
}

fn samples() -> Vec<(&'static str, Vec<u8>)> {
    let record = |seq, body| envelope(&LogRecordV1 { seq, body }).unwrap();
    vec![
        (
            "meta",
            envelope(&MetaV1 {
                head: 42,
                epoch: 2,
                epoch_started_at_micros: 7,
                log_start: 30,
                usage_floor: 30,
                checkpoint: 40,
                reseeded: 3,
            })
            .unwrap(),
        ),
        (
            "record_org_created",
            record(1, RecordBodyV1::OrgCreated(org())),
        ),
        (
            "record_org_updated",
            record(2, RecordBodyV1::OrgUpdated(org())),
        ),
        (
            "record_org_deleted",
            record(3, RecordBodyV1::OrgDeleted(guid(10))),
        ),
        (
            "record_space_created",
            record(4, RecordBodyV1::SpaceCreated(space())),
        ),
        (
            "record_space_updated",
            record(5, RecordBodyV1::SpaceUpdated(space())),
        ),
        (
            "record_space_deleted",
            record(6, RecordBodyV1::SpaceDeleted(guid(2))),
        ),
        (
            "record_app_created",
            record(7, RecordBodyV1::AppCreated(Box::new(app()))),
        ),
        (
            "record_app_updated",
            record(8, RecordBodyV1::AppUpdated(Box::new(app()))),
        ),
        (
            "record_app_deleted",
            record(9, RecordBodyV1::AppDeleted(guid(1))),
        ),
        ("record_usage", record(10, RecordBodyV1::Usage(usage()))),
        ("record_audit", record(11, RecordBodyV1::Audit(audit()))),
        (
            "record_role_granted",
            record(15, RecordBodyV1::RoleGranted(membership())),
        ),
        (
            "record_role_revoked",
            record(16, RecordBodyV1::RoleRevoked(membership())),
        ),
        (
            "record_audit_text_actee",
            record(
                17,
                RecordBodyV1::AuditTextActee(AuditTextActeeV1 {
                    event: AuditEventV1 {
                        actee: [0; 16],
                        actee_type: "user".into(),
                        ..audit()
                    },
                    actee: "ci-client".into(),
                }),
            ),
        ),
        (
            "record_usage_pruned",
            record(
                18,
                RecordBodyV1::UsagePruned(UsagePrunedV1 {
                    guid: guid(3),
                    created_at: 1_700_000_000_000_000,
                    cutoff: 1_702_678_400_000_000,
                }),
            ),
        ),
        (
            "row_members",
            envelope(&TableRowV1::Members(members())).unwrap(),
        ),
        (
            "block",
            envelope(&BlockV1 {
                records: vec![
                    LogRecordV1 {
                        seq: 12,
                        body: RecordBodyV1::Usage(usage()),
                    },
                    LogRecordV1 {
                        seq: 14,
                        body: RecordBodyV1::Usage(usage()),
                    },
                ],
            })
            .unwrap(),
        ),
        (
            "table_bucket",
            envelope(&TableBucketV1 {
                rows: vec![TableRowV1::Space(space()), TableRowV1::Org(org())],
            })
            .unwrap(),
        ),
        (
            "reseed_index",
            envelope(&ReseedIndexV1 {
                epoch: 2,
                entries: vec![(guid(1), 31), (guid(2), 30)],
            })
            .unwrap(),
        ),
        ("row_org", envelope(&TableRowV1::Org(org())).unwrap()),
        ("row_space", envelope(&TableRowV1::Space(space())).unwrap()),
        (
            "row_app",
            envelope(&TableRowV1::App(Box::new(app()))).unwrap(),
        ),
        // Package state 2 (AWAITING_UPLOAD) came with v3 packages: a new tag, the same layout.
        (
            "row_app_package_awaiting_upload",
            envelope(&TableRowV1::App(Box::new(AppV1 {
                package: Some(PackageV1 {
                    guid: guid(5),
                    state: 2,
                    sha256: String::new(),
                    size_bytes: 0,
                    created_at: 2,
                }),
                ..app()
            })))
            .unwrap(),
        ),
        // Tasks came with v3 tasks: new variants at the end, the earlier tags unchanged.
        ("record_task_put", record(19, RecordBodyV1::TaskPut(task()))),
        (
            "record_task_deleted",
            record(20, RecordBodyV1::TaskDeleted(guid(20))),
        ),
        (
            "row_task",
            envelope(&TableRowV1::Task(TaskV1 {
                state: 4,
                failure_reason: Some("exit 1".into()),
                ..task()
            }))
            .unwrap(),
        ),
        // Other process types came after tasks: new variants at the end again.
        (
            "record_process_put",
            record(21, RecordBodyV1::ProcessPut(process())),
        ),
        (
            "record_process_deleted",
            record(22, RecordBodyV1::ProcessDeleted(guid(21))),
        ),
        (
            "row_process",
            envelope(&TableRowV1::Process(ProcessV1 {
                state: 1,
                command: None,
                health_check_type: 2,
                health_check_http_endpoint: Some("/healthz".into()),
                ..process()
            }))
            .unwrap(),
        ),
        (
            "snapshot_chunk",
            envelope(&SnapshotChunkV1 {
                log_start: 30,
                rows: vec![TableRowV1::Org(org()), TableRowV1::App(Box::new(app()))],
            })
            .unwrap(),
        ),
    ]
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/v1")
        .join(format!("{name}.bin"))
}

#[test]
fn golden_bytes_of_every_v1_type_are_unchanged() {
    let write_missing = std::env::var_os("TALLY_WRITE_GOLDEN").is_some();
    for (name, bytes) in samples() {
        let path = fixture(name);
        if !path.exists() && write_missing {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let golden = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("missing golden fixture {}: {e}", path.display()));
        assert_eq!(
            golden, bytes,
            "encoding of {name} changed: that is a new format version"
        );
    }
}

#[test]
fn golden_fixtures_decode_to_the_expected_values() {
    let record = |name| open::<LogRecordV1>(&std::fs::read(fixture(name)).unwrap()).unwrap();
    assert_eq!(
        record("record_app_created").body,
        RecordBodyV1::AppCreated(Box::new(app()))
    );
    assert_eq!(record("record_usage").body, RecordBodyV1::Usage(usage()));
    assert_eq!(record("record_audit").body, RecordBodyV1::Audit(audit()));
    assert_eq!(
        record("record_space_deleted"),
        LogRecordV1 {
            seq: 6,
            body: RecordBodyV1::SpaceDeleted(guid(2))
        }
    );
    let meta: MetaV1 = open(&std::fs::read(fixture("meta")).unwrap()).unwrap();
    assert_eq!(meta.head, 42);
    let row: TableRowV1 = open(&std::fs::read(fixture("row_app")).unwrap()).unwrap();
    assert_eq!(row, TableRowV1::App(Box::new(app())));
}

#[test]
fn every_fixture_on_disk_is_covered_by_a_sample() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/v1");
    let names: Vec<_> = samples()
        .into_iter()
        .map(|(n, _)| format!("{n}.bin"))
        .collect();
    for entry in std::fs::read_dir(dir).unwrap() {
        let file = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            names.contains(&file),
            "fixture {file} has no sample: fixtures are never deleted"
        );
    }
}

#[test]
fn corruption_is_detected() {
    let bytes = envelope(&LogRecordV1 {
        seq: 1,
        body: RecordBodyV1::Usage(usage()),
    })
    .unwrap();
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    assert!(matches!(
        open::<LogRecordV1>(&flipped),
        Err(DecodeError::Checksum { .. })
    ));
    let mut version = bytes.clone();
    version[0] = 9;
    assert_eq!(
        open::<LogRecordV1>(&version),
        Err(DecodeError::UnknownVersion(9))
    );
    assert_eq!(
        open::<LogRecordV1>(&bytes[..3]),
        Err(DecodeError::Truncated(3))
    );
    // A valid checksum over bytes that are not a record.
    let mut bogus = vec![FORMAT_V1, 0, 0, 0, 0, 0xFF, 0xFF];
    let crc = crc32fast::hash(&bogus[5..]);
    bogus[1..5].copy_from_slice(&crc.to_le_bytes());
    assert!(matches!(
        open::<LogRecordV1>(&bogus),
        Err(DecodeError::Payload(_) | DecodeError::Trailing(_))
    ));
}

proptest! {
    /// Untrusted bytes never make the decoder panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), fix in any::<bool>()) {
        let mut bytes = bytes;
        if fix && bytes.len() >= 5 {
            bytes[0] = FORMAT_V1;
            let crc = crc32fast::hash(&bytes[5..]);
            bytes[1..5].copy_from_slice(&crc.to_le_bytes());
        }
        let _ = open::<LogRecordV1>(&bytes);
        let _ = open::<MetaV1>(&bytes);
        let _ = open::<TableRowV1>(&bytes);
        let _ = open::<SnapshotChunkV1>(&bytes);
        let _ = open::<BlockV1>(&bytes);
        let _ = open::<TableBucketV1>(&bytes);
        let _ = open::<ReseedIndexV1>(&bytes);
    }

    /// A record survives a round trip.
    #[test]
    fn round_trip(seq in any::<u64>(), name in ".{0,40}", n in any::<i64>()) {
        let mut u = usage();
        u.app_name = name;
        u.instance_count = n;
        let record = LogRecordV1 { seq, body: RecordBodyV1::Usage(u) };
        prop_assert_eq!(open::<LogRecordV1>(&envelope(&record).unwrap()).unwrap(), record);
    }
}

/// A block of the golden records `names`, built from their frozen bytes: a block's payload is
/// the record count, then each record's payload.
fn golden_block(names: &[&str]) -> Vec<u8> {
    let mut payload = (names.len() as u64).to_le_bytes().to_vec();
    for name in names {
        let bytes = std::fs::read(fixture(name)).unwrap();
        payload.extend_from_slice(&bytes[5..]);
    }
    let mut out = vec![FORMAT_V1];
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// The keys the owned decoding of a usage block gives.
fn owned_usage_keys(bytes: &[u8]) -> Vec<borrowed::UsageKey> {
    let block: BlockV1 = open(bytes).unwrap();
    block
        .records
        .into_iter()
        .map(|r| match r.body {
            RecordBodyV1::Usage(u) => borrowed::UsageKey::Event {
                seq: r.seq,
                created_at: u.created_at,
            },
            RecordBodyV1::UsagePruned(_) => borrowed::UsageKey::Pruned { seq: r.seq },
            other => panic!("not a usage record: {other:?}"),
        })
        .collect()
}

/// seq, created_at, type, actee (a guid as `{:?}` of its bytes), space, org.
type OwnedAuditKey = (u64, i64, String, String, Option<GuidV1>, Option<GuidV1>);

/// What the owned decoding of an audit block says of the fields the audit index reads.
fn owned_audit_keys(bytes: &[u8]) -> Vec<OwnedAuditKey> {
    let block: BlockV1 = open(bytes).unwrap();
    block
        .records
        .into_iter()
        .map(|r| {
            let (event, actee) = match r.body {
                RecordBodyV1::Audit(a) => {
                    let actee = format!("{:?}", a.actee);
                    (a, actee)
                }
                RecordBodyV1::AuditTextActee(t) => (t.event, t.actee),
                other => panic!("not an audit record: {other:?}"),
            };
            (
                r.seq,
                event.created_at,
                event.event_type,
                actee,
                event.space_guid,
                event.organization_guid,
            )
        })
        .collect()
}

fn as_owned(keys: Vec<borrowed::AuditKey<'_>>) -> Vec<OwnedAuditKey> {
    keys.into_iter()
        .map(|k| {
            let actee = match k.actee {
                borrowed::Actee::Guid(g) => format!("{g:?}"),
                borrowed::Actee::Text(t) => t.to_owned(),
            };
            (
                k.seq,
                k.created_at,
                k.event_type.to_owned(),
                actee,
                k.space_guid,
                k.organization_guid,
            )
        })
        .collect()
}

#[test]
fn borrowed_keys_read_the_golden_usage_and_audit_records() {
    let usage = golden_block(&["record_usage", "record_usage_pruned", "record_usage"]);
    assert_eq!(
        borrowed::usage_keys(&usage).unwrap(),
        [
            borrowed::UsageKey::Event {
                seq: 10,
                created_at: 1_714_557_600_123_456
            },
            borrowed::UsageKey::Pruned { seq: 18 },
            borrowed::UsageKey::Event {
                seq: 10,
                created_at: 1_714_557_600_123_456
            },
        ]
    );
    assert_eq!(
        borrowed::usage_keys(&usage).unwrap(),
        owned_usage_keys(&usage)
    );
    let audit = golden_block(&["record_audit", "record_audit_text_actee"]);
    let keys = borrowed::audit_keys(&audit).unwrap();
    assert_eq!(
        keys[0],
        borrowed::AuditKey {
            seq: 11,
            created_at: 5,
            event_type: "audit.app.update",
            actee: borrowed::Actee::Guid(guid(1)),
            space_guid: Some(guid(2)),
            organization_guid: Some(guid(10)),
        }
    );
    assert_eq!(keys[1].seq, 17);
    assert_eq!(keys[1].actee, borrowed::Actee::Text("ci-client"));
    assert_eq!(as_owned(keys), owned_audit_keys(&audit));
}

#[test]
fn borrowed_keys_refuse_other_streams_and_damaged_blocks() {
    let mixed = golden_block(&["record_usage", "record_audit"]);
    assert!(borrowed::usage_keys(&mixed).is_err());
    assert!(borrowed::audit_keys(&mixed).is_err());
    let entity = golden_block(&["record_app_created"]);
    assert!(borrowed::usage_keys(&entity).is_err());
    assert!(borrowed::audit_keys(&entity).is_err());
    let mut flipped = golden_block(&["record_audit"]);
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(matches!(
        borrowed::audit_keys(&flipped),
        Err(DecodeError::Checksum { .. })
    ));
    // A record cut short: the block's count claims one more than there is.
    let usage = std::fs::read(fixture("record_usage")).unwrap();
    let mut payload = 2u64.to_le_bytes().to_vec();
    payload.extend_from_slice(&usage[5..]);
    let mut short = vec![FORMAT_V1];
    short.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    short.extend_from_slice(&payload);
    assert!(matches!(
        borrowed::usage_keys(&short),
        Err(DecodeError::Payload(_))
    ));
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    prop::option::of(".{0,12}")
}

prop_compose! {
    fn any_usage()(
        created_at in any::<i64>(), state in any::<u8>(), previous in any::<Option<u8>>(),
        counts in any::<(i64, Option<i64>, i64, Option<i64>)>(),
        names in (".{0,20}", ".{0,20}", ".{0,20}"),
        texts in (opt_text(), opt_text(), opt_text(), opt_text(), opt_text(), opt_text()),
        guids in any::<(Option<[u8; 16]>, Option<[u8; 16]>, Option<[u8; 16]>)>(),
    ) -> UsageEventV1 {
        UsageEventV1 {
            guid: guid(1), created_at, state, previous_state: previous,
            instance_count: counts.0, previous_instance_count: counts.1,
            memory_in_mb_per_instance: counts.2, previous_memory_in_mb_per_instance: counts.3,
            app_guid: names.0, app_name: names.1, space_guid: guid(2), space_name: names.2,
            org_guid: guid(3), buildpack_guid: guids.0, buildpack_name: texts.0,
            package_state: texts.1, previous_package_state: texts.2, parent_app_guid: guids.1,
            parent_app_name: texts.3, process_type: texts.4, task_guid: guids.2, task_name: texts.5,
        }
    }
}

prop_compose! {
    fn any_audit()(
        created_at in any::<i64>(),
        texts in (".{0,20}", ".{0,12}", ".{0,12}", ".{0,12}", ".{0,12}", ".{0,12}", ".{0,12}", ".{0,40}"),
        actee in any::<[u8; 16]>(), text_actee in opt_text(),
        places in any::<(Option<[u8; 16]>, Option<[u8; 16]>)>(),
    ) -> RecordBodyV1 {
        let event = AuditEventV1 {
            guid: guid(4), created_at, event_type: texts.0, actor: texts.1, actor_type: texts.2,
            actor_name: texts.3, actor_username: texts.4, actee, actee_type: texts.5,
            actee_name: texts.6, metadata: texts.7, space_guid: places.0,
            organization_guid: places.1,
        };
        match text_actee {
            Some(actee) => RecordBodyV1::AuditTextActee(AuditTextActeeV1 {
                event: AuditEventV1 { actee: [0; 16], ..event },
                actee,
            }),
            None => RecordBodyV1::Audit(event),
        }
    }
}

proptest! {
    /// The borrowed keys of any usage or audit block are what its owned decoding says.
    #[test]
    fn borrowed_keys_agree_with_the_owned_decoding(
        usage in prop::collection::vec((any::<u64>(), any_usage(), any::<Option<(i64, i64)>>()), 0..8),
        audit in prop::collection::vec((any::<u64>(), any_audit()), 0..8),
    ) {
        let usage = envelope(&BlockV1 {
            records: usage
                .into_iter()
                .map(|(seq, u, pruned)| LogRecordV1 {
                    seq,
                    body: match pruned {
                        Some((created_at, cutoff)) => {
                            RecordBodyV1::UsagePruned(UsagePrunedV1 { guid: u.guid, created_at, cutoff })
                        }
                        None => RecordBodyV1::Usage(u),
                    },
                })
                .collect(),
        })
        .unwrap();
        prop_assert_eq!(borrowed::usage_keys(&usage).unwrap(), owned_usage_keys(&usage));
        let audit = envelope(&BlockV1 {
            records: audit.into_iter().map(|(seq, body)| LogRecordV1 { seq, body }).collect(),
        })
        .unwrap();
        prop_assert_eq!(as_owned(borrowed::audit_keys(&audit).unwrap()), owned_audit_keys(&audit));
    }

    /// Untrusted bytes never make the borrowed reads panic.
    #[test]
    fn borrowed_keys_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = bytes;
        if bytes.len() >= 5 {
            bytes[0] = FORMAT_V1;
            let crc = crc32fast::hash(&bytes[5..]);
            bytes[1..5].copy_from_slice(&crc.to_le_bytes());
        }
        let _ = borrowed::usage_keys(&bytes);
        let _ = borrowed::audit_keys(&bytes);
    }
}

/// Every record [`visit_block`] hands over, or the error it stopped at.
fn visited(bytes: &[u8]) -> Result<Vec<LogRecordV1>, DecodeError> {
    let mut records = Vec::new();
    let flow = visit_block(bytes, |record| {
        records.push(record);
        Ok::<_, ()>(std::ops::ControlFlow::Continue(()))
    });
    match flow {
        Ok(_) => Ok(records),
        Err(VisitError::Decode(e)) => Err(e),
        Err(VisitError::Visit(())) => unreachable!("this visitor never fails"),
    }
}

#[test]
fn visiting_a_block_reads_the_golden_records_and_refuses_what_open_refuses() {
    let golden = std::fs::read(fixture("block")).unwrap();
    let block: BlockV1 = open(&golden).unwrap();
    assert!(!block.records.is_empty());
    assert_eq!(visited(&golden).unwrap(), block.records);
    let mixed = golden_block(&["record_usage", "record_usage_pruned", "record_audit"]);
    assert_eq!(
        visited(&mixed).unwrap(),
        open::<BlockV1>(&mixed).unwrap().records
    );
    assert_eq!(visited(&mixed).unwrap().len(), 3);
    // Damage of every kind open detects: checksum, version, truncation, trailing bytes, a
    // record cut short, an absurd count.
    let mut flipped = mixed.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    assert!(matches!(
        visited(&flipped),
        Err(DecodeError::Checksum { .. })
    ));
    assert_eq!(visited(&mixed[..3]), Err(DecodeError::Truncated(3)));
    let reframe = |payload: Vec<u8>| {
        let mut out = vec![FORMAT_V1];
        out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
        out
    };
    let mut trailing = mixed[5..].to_vec();
    trailing.push(0);
    assert_eq!(
        visited(&reframe(trailing.clone())),
        Err(DecodeError::Trailing(1))
    );
    assert_eq!(
        open::<BlockV1>(&reframe(trailing)),
        Err(DecodeError::Trailing(1))
    );
    let cut = reframe(mixed[5..mixed.len() - 1].to_vec());
    assert!(matches!(visited(&cut), Err(DecodeError::Payload(_))));
    let mut absurd = mixed[5..].to_vec();
    absurd[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        visited(&reframe(absurd)),
        Err(DecodeError::Payload(_))
    ));
}

#[test]
fn a_visit_that_breaks_decodes_no_further_and_a_visitors_error_is_its_own() {
    let mixed = golden_block(&["record_usage", "record_usage_pruned", "record_audit"]);
    let mut seen = 0;
    let flow = visit_block(&mixed, |_| {
        seen += 1;
        Ok::<_, ()>(if seen == 2 {
            std::ops::ControlFlow::Break(())
        } else {
            std::ops::ControlFlow::Continue(())
        })
    });
    assert!(matches!(flow, Ok(std::ops::ControlFlow::Break(()))));
    assert_eq!(seen, 2);
    let failed = visit_block(&mixed, |_| Err::<std::ops::ControlFlow<()>, _>("no"));
    assert!(matches!(failed, Err(VisitError::Visit("no"))));
}

proptest! {
    /// On any bytes, visiting a block gives what `open::<BlockV1>` gives: the same records, or
    /// an error where it errs.
    #[test]
    fn visiting_a_block_agrees_with_opening_it(
        usage in prop::collection::vec((any::<u64>(), any_usage()), 0..8),
        damage in prop::collection::vec((any::<usize>(), any::<u8>()), 0..3),
        cut in any::<Option<usize>>(),
    ) {
        let block = BlockV1 {
            records: usage.into_iter().map(|(seq, u)| LogRecordV1 { seq, body: RecordBodyV1::Usage(u) }).collect(),
        };
        let bytes = envelope(&block).unwrap();
        prop_assert_eq!(visited(&bytes).unwrap(), block.records);
        // Damaged payloads under a valid checksum: both agree on whether they read.
        let damaged = damaged(&bytes, damage, cut);
        match (open::<BlockV1>(&damaged), visited(&damaged)) {
            (Ok(block), Ok(records)) => prop_assert_eq!(block.records, records),
            (Err(a), Err(b)) => prop_assert_eq!(a, b),
            (a, b) => prop_assert!(false, "open {:?} but visit {:?}", a.map(|b| b.records.len()), b.map(|r| r.len())),
        }
    }
}

/// An envelope's payload with `damage` written into it and cut at `cut`, under a valid
/// checksum.
fn damaged(bytes: &[u8], damage: Vec<(usize, u8)>, cut: Option<usize>) -> Vec<u8> {
    let mut payload = bytes[5..].to_vec();
    for (at, byte) in damage {
        if !payload.is_empty() {
            let at = at % payload.len();
            payload[at] = byte;
        }
    }
    if let Some(cut) = cut {
        payload.truncate(cut % (payload.len() + 1));
    }
    let mut damaged = vec![FORMAT_V1];
    damaged.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    damaged.extend_from_slice(&payload);
    damaged
}

/// Every record [`visit_usage_block`] hands over, or the error it stopped at.
fn visited_usage(bytes: &[u8]) -> Result<Vec<(u64, UsageRecordV1)>, DecodeError> {
    let mut records = Vec::new();
    let flow = visit_usage_block(bytes, |seq, record| {
        records.push((seq, record));
        Ok::<_, ()>(std::ops::ControlFlow::Continue(()))
    });
    match flow {
        Ok(_) => Ok(records),
        Err(VisitError::Decode(e)) => Err(e),
        Err(VisitError::Visit(())) => unreachable!("this visitor never fails"),
    }
}

/// What [`visit_usage_block`] should make of the records [`visit_block`] hands over.
fn as_usage(records: Vec<LogRecordV1>) -> Vec<(u64, UsageRecordV1)> {
    records
        .into_iter()
        .map(|r| {
            let body = match r.body {
                RecordBodyV1::Usage(u) => UsageRecordV1::Event(u),
                RecordBodyV1::UsagePruned(p) => UsageRecordV1::Pruned(p),
                other => UsageRecordV1::Other(other),
            };
            (r.seq, body)
        })
        .collect()
}

#[test]
fn visiting_a_usage_block_reads_what_visiting_the_block_reads() {
    let mixed = golden_block(&["record_usage", "record_usage_pruned", "record_audit"]);
    let usage = visited_usage(&mixed).unwrap();
    assert_eq!(usage, as_usage(visited(&mixed).unwrap()));
    assert!(matches!(usage[0].1, UsageRecordV1::Event(_)));
    assert!(matches!(usage[1].1, UsageRecordV1::Pruned(_)));
    // A record of another stream is handed over whole, for the caller to refuse.
    assert!(matches!(
        usage[2].1,
        UsageRecordV1::Other(RecordBodyV1::Audit(_))
    ));
    let golden = std::fs::read(fixture("block")).unwrap();
    assert_eq!(
        visited_usage(&golden).unwrap(),
        as_usage(open::<BlockV1>(&golden).unwrap().records)
    );
    // The same damage, the same errors.
    let mut flipped = mixed.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    assert_eq!(visited_usage(&flipped), visited(&flipped).map(as_usage));
    assert_eq!(visited_usage(&mixed[..3]), Err(DecodeError::Truncated(3)));
    let mut seen = 0;
    let flow = visit_usage_block(&mixed, |_, _| {
        seen += 1;
        Ok::<_, ()>(std::ops::ControlFlow::Break(()))
    });
    assert!(matches!(flow, Ok(std::ops::ControlFlow::Break(()))));
    assert_eq!(seen, 1);
}

proptest! {
    /// On any usage block, damaged or not, visiting it as a usage block gives what visiting
    /// it gives: the same records, or the same error.
    #[test]
    fn visiting_a_usage_block_agrees_with_visiting_it(
        usage in prop::collection::vec((any::<u64>(), any_usage(), any::<u8>()), 0..8),
        damage in prop::collection::vec((any::<usize>(), any::<u8>()), 0..3),
        cut in any::<Option<usize>>(),
    ) {
        let block = BlockV1 {
            records: usage
                .into_iter()
                .map(|(seq, u, kind)| LogRecordV1 {
                    seq,
                    body: match kind % 8 {
                        0 => RecordBodyV1::UsagePruned(UsagePrunedV1 { guid: u.guid, created_at: u.created_at, cutoff: u.instance_count }),
                        1 => RecordBodyV1::OrgDeleted(u.guid),
                        _ => RecordBodyV1::Usage(u),
                    },
                })
                .collect(),
        };
        let bytes = envelope(&block).unwrap();
        prop_assert_eq!(visited_usage(&bytes).unwrap(), as_usage(block.records));
        let damaged = damaged(&bytes, damage, cut);
        prop_assert_eq!(visited_usage(&damaged), visited(&damaged).map(as_usage));
    }
}
