//! Every endpoint that exists, for every kind of caller (reference §8): a table of expected
//! statuses and CC error codes, each cell run against a fresh service.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use tally_domain::{Actor, Command, Envelope, Guid, Membership, RoleKind};
use tower::ServiceExt;

use crate::*;

const SECRET: &[u8] = b"permission-test-secret";
const ORG: Guid = Guid::from_u128(0x0A);
const SPACE: Guid = Guid::from_u128(0x0B);
const OTHER_SPACE: Guid = Guid::from_u128(0x0C);
const NOWHERE: Guid = Guid::from_u128(0xDEAD);
const APP: Guid = Guid::from_u128(0x0D);
const TARGET: &str = "5b1f7d6e-0000-4000-8000-00000000beef";
const DOCKER_APP: Guid = Guid::from_u128(0x0E);
/// A task of the docker app (it succeeded at once: immediate mode's default).
const TASK: Guid = Guid::from_u128(0x0F);

/// An org with two spaces; `om` manages the org, `oa` audits it, `sm` manages SPACE, `dev`
/// develops in it, `ou` is only an org user, TARGET is the org user the requests manage.
async fn service() -> Router {
    service_with_event().await.0
}

/// The service, and the guids of the audit event of the app's creation, of a usage event and
/// of the docker app's droplet.
async fn service_with_event() -> (Router, String, String, String) {
    let engine = crate::tests::memory_engine();
    let mut commands = vec![
        Command::CreateOrg {
            guid: ORG,
            name: "org".into(),
        },
        Command::CreateSpace {
            guid: SPACE,
            org_guid: ORG,
            name: "space".into(),
        },
        Command::CreateSpace {
            guid: OTHER_SPACE,
            org_guid: ORG,
            name: "other".into(),
        },
    ];
    commands.push(Command::CreateApp {
        guid: APP,
        attributes: tally_domain::AppAttributes {
            name: Some("app".into()),
            space_guid: Some(SPACE),
            ..Default::default()
        },
        audit_request: tally_domain::audit::Value::empty(),
    });
    // A started docker app: its start writes usage events.
    commands.push(Command::CreateApp {
        guid: DOCKER_APP,
        attributes: tally_domain::AppAttributes {
            name: Some("docker".into()),
            space_guid: Some(SPACE),
            docker_image: Some("nginx".into()),
            state: Some("STARTED".into()),
            ..Default::default()
        },
        audit_request: tally_domain::audit::Value::empty(),
    });
    commands.push(Command::CreateTask {
        guid: TASK,
        app_guid: DOCKER_APP,
        spec: tally_domain::TaskSpec {
            command: Some("true".into()),
            ..Default::default()
        },
        audit_request: tally_domain::audit::Value::empty(),
    });
    let grant = |resource, role, user: &str| {
        Command::GrantRole(Membership {
            resource,
            role,
            user: user.into(),
        })
    };
    for user in ["om", "oa", "sm", "dev", "ou", TARGET] {
        commands.push(grant(ORG, RoleKind::OrgUser, user));
    }
    commands.push(grant(ORG, RoleKind::OrgManager, "om"));
    commands.push(grant(ORG, RoleKind::OrgAuditor, "oa"));
    commands.push(grant(SPACE, RoleKind::SpaceManager, "sm"));
    commands.push(grant(SPACE, RoleKind::SpaceDeveloper, "dev"));
    for command in commands {
        engine
            .submit(Envelope {
                command,
                actor: Actor::system(),
                principal: None,
            })
            .await
            .unwrap();
    }
    let view = engine.view();
    let audit = engine.audit_after(&view, 0, 1000).await.unwrap();
    let event = audit
        .iter()
        .find(|(_, e)| e.event_type == "audit.app.create")
        .map(|(_, e)| e.guid.to_string())
        .unwrap();
    let usage = engine.usage_after(&view, 0, 1).await.unwrap()[0]
        .1
        .guid
        .to_string();
    let droplet = view
        .state
        .app(DOCKER_APP)
        .and_then(|a| a.current_droplet_guid)
        .unwrap()
        .to_string();
    let app = router(crate::tests::test_state(
        engine,
        SECRET,
        "http://api.example.org",
        std::time::Duration::from_secs(60),
        crate::Closing::new().1,
    ));
    (app, event, usage, droplet)
}

fn token(user: &str, scopes: &[&str]) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = json!({
        "user_id": user, "email": format!("{user}@example.org"), "user_name": user,
        "aud": ["cloud_controller"], "exp": exp, "jti": "j", "scope": scopes,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

const RW: &[&str] = &["cloud_controller.read", "cloud_controller.write"];

/// The callers, in the column order of the table.
fn callers() -> Vec<(&'static str, Option<String>)> {
    vec![
        ("missing", None),
        ("invalid", Some("bearer not.a.token".into())),
        ("admin", Some(token("x", &["cloud_controller.admin"]))),
        (
            "admin_ro",
            Some(token("x", &["cloud_controller.admin_read_only"])),
        ),
        (
            "auditor",
            Some(token("x", &["cloud_controller.global_auditor"])),
        ),
        ("rw", Some(token("x", RW))),
        ("org_mgr", Some(token("om", RW))),
        ("org_aud", Some(token("oa", RW))),
        ("space_mgr", Some(token("sm", RW))),
        ("dev", Some(token("dev", RW))),
        ("org_user", Some(token("ou", RW))),
        ("no_scope", Some(token("om", &["openid"]))),
    ]
}

/// Expected answer: a status, and for errors the CC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cell(u16, Option<u32>);

const OK: Cell = Cell(200, None);
const CREATED: Cell = Cell(201, None);
const GONE: Cell = Cell(204, None);
const MISSING: Cell = Cell(401, Some(10002));
const INVALID: Cell = Cell(401, Some(1000));
const SCOPE: Cell = Cell(403, Some(10007));
const NOT_AUTH: Cell = Cell(403, Some(10003));
const ORG_404: Cell = Cell(404, Some(30003));
const SPACE_404: Cell = Cell(404, Some(40004));

/// One row per endpoint; the cells follow `callers()`.
pub(crate) fn table() -> Vec<(&'static str, String, [Cell; 12])> {
    let (o, s, t, n) = (ORG, SPACE, OTHER_SPACE, NOWHERE);
    let open = [OK; 12];
    let mut rows = vec![
        ("GET", "/".to_owned(), open),
        ("GET", "/v2/info".to_owned(), open),
        ("GET", "/healthz".to_owned(), open),
        ("GET", "/readyz".to_owned(), open),
    ];
    //                missing  invalid  admin    adm_ro   auditor  rw        org_mgr  org_aud  space_mgr dev      org_user no_scope
    let org_read = [
        MISSING, INVALID, OK, OK, OK, NOT_AUTH, OK, OK, OK, OK, OK, SCOPE,
    ];
    let space_read = [
        MISSING, INVALID, OK, OK, OK, NOT_AUTH, OK, NOT_AUTH, OK, OK, NOT_AUTH, SCOPE,
    ];
    let other_space_read = [
        MISSING, INVALID, OK, OK, OK, NOT_AUTH, OK, NOT_AUTH, NOT_AUTH, NOT_AUTH, NOT_AUTH, SCOPE,
    ];
    let org_write = |ok| {
        [
            MISSING, INVALID, ok, SCOPE, SCOPE, NOT_AUTH, ok, NOT_AUTH, NOT_AUTH, NOT_AUTH,
            NOT_AUTH, SCOPE,
        ]
    };
    let space_write = |ok| {
        [
            MISSING, INVALID, ok, SCOPE, SCOPE, NOT_AUTH, ok, NOT_AUTH, ok, NOT_AUTH, NOT_AUTH,
            SCOPE,
        ]
    };
    let other_space_write = |ok| {
        [
            MISSING, INVALID, ok, SCOPE, SCOPE, NOT_AUTH, ok, NOT_AUTH, NOT_AUTH, NOT_AUTH,
            NOT_AUTH, SCOPE,
        ]
    };
    let unknown = |not_found, write: bool| {
        let ro = if write { SCOPE } else { not_found };
        [
            MISSING, INVALID, not_found, ro, ro, not_found, not_found, not_found, not_found,
            not_found, not_found, SCOPE,
        ]
    };
    let everyone = [MISSING, INVALID, OK, OK, OK, OK, OK, OK, OK, OK, OK, SCOPE];
    let parse_error = Cell(400, Some(1001));
    let not_empty = Cell(400, Some(10006));
    rows.push(("GET", "/v2/organizations".to_owned(), everyone));
    rows.push(("GET", format!("/v2/organizations/{o}"), org_read));
    rows.push((
        "GET",
        format!("/v2/organizations/{n}"),
        unknown(ORG_404, false),
    ));
    rows.push((
        "POST",
        "/v2/organizations".to_owned(),
        [
            MISSING,
            INVALID,
            parse_error,
            SCOPE,
            SCOPE,
            NOT_AUTH,
            NOT_AUTH,
            NOT_AUTH,
            NOT_AUTH,
            NOT_AUTH,
            NOT_AUTH,
            SCOPE,
        ],
    ));
    rows.push(("PUT", format!("/v2/organizations/{o}"), org_write(CREATED)));
    rows.push((
        "DELETE",
        format!("/v2/organizations/{o}"),
        [
            MISSING, INVALID, not_empty, SCOPE, SCOPE, NOT_AUTH, NOT_AUTH, NOT_AUTH, NOT_AUTH,
            NOT_AUTH, NOT_AUTH, SCOPE,
        ],
    ));
    let app_404 = Cell(404, Some(100004));
    let dev_write = |ok| {
        [
            MISSING, INVALID, ok, SCOPE, SCOPE, NOT_AUTH, NOT_AUTH, NOT_AUTH, NOT_AUTH, ok,
            NOT_AUTH, SCOPE,
        ]
    };
    let a = APP;
    rows.push(("GET", "/v2/apps".to_owned(), everyone));
    rows.push(("GET", format!("/v2/apps/{a}"), space_read));
    rows.push(("GET", format!("/v2/apps/{n}"), unknown(app_404, false)));
    rows.push((
        "POST",
        "/v2/apps".to_owned(),
        [
            MISSING,
            INVALID,
            parse_error,
            SCOPE,
            SCOPE,
            parse_error,
            parse_error,
            parse_error,
            parse_error,
            parse_error,
            parse_error,
            SCOPE,
        ],
    ));
    rows.push(("PUT", format!("/v2/apps/{a}"), dev_write(CREATED)));
    rows.push(("PUT", format!("/v2/apps/{n}"), unknown(app_404, true)));
    rows.push(("DELETE", format!("/v2/apps/{a}"), dev_write(GONE)));
    // No multipart body: refused after the permission check.
    rows.push((
        "PUT",
        format!("/v2/apps/{a}/bits"),
        dev_write(Cell(400, Some(160001))),
    ));
    rows.push(("PUT", format!("/v2/apps/{n}/bits"), unknown(app_404, true)));
    rows.push((
        "POST",
        format!("/v2/apps/{a}/restage"),
        dev_write(Cell(400, Some(170002))),
    ));
    // Restage looks the app up before any permission check (§5.3).
    rows.push((
        "POST",
        format!("/v2/apps/{n}/restage"),
        [
            MISSING, INVALID, app_404, app_404, app_404, app_404, app_404, app_404, app_404,
            app_404, app_404, app_404,
        ],
    ));
    let found_10010 = Cell(404, Some(10010));
    // Reference §8.2, every cell.
    let usage_404 = Cell(404, Some(10010));
    let global = |list: Cell, v3_rest: Cell| {
        [
            MISSING, INVALID, OK, OK, OK, list, list, list, list, list, list, v3_rest,
        ]
    };
    rows.push((
        "GET",
        "/v2/app_usage_events".to_owned(),
        [
            MISSING, INVALID, OK, OK, SCOPE, SCOPE, SCOPE, SCOPE, SCOPE, SCOPE, SCOPE, SCOPE,
        ],
    ));
    rows.push((
        "GET",
        "/v2/app_usage_events/{USAGE}".to_owned(),
        global(NOT_AUTH, SCOPE),
    ));
    rows.push((
        "GET",
        format!("/v2/app_usage_events/{n}"),
        unknown(Cell(404, Some(230002)), false),
    ));
    let purge = |denied: Cell, ok: Cell| {
        [
            MISSING, INVALID, ok, denied, denied, denied, denied, denied, denied, denied, denied,
            denied,
        ]
    };
    rows.push((
        "POST",
        "/v2/app_usage_events/destructively_purge_all_and_reseed_started_apps".to_owned(),
        purge(SCOPE, GONE),
    ));
    rows.push((
        "GET",
        "/v3/app_usage_events".to_owned(),
        global(OK, NOT_AUTH),
    ));
    rows.push((
        "GET",
        "/v3/app_usage_events/{USAGE}".to_owned(),
        global(usage_404, NOT_AUTH),
    ));
    rows.push((
        "GET",
        format!("/v3/app_usage_events/{n}"),
        [
            MISSING, INVALID, usage_404, usage_404, usage_404, usage_404, usage_404, usage_404,
            usage_404, usage_404, usage_404, NOT_AUTH,
        ],
    ));
    rows.push((
        "POST",
        "/v3/app_usage_events/actions/destructively_purge_all_and_reseed".to_owned(),
        purge(NOT_AUTH, OK),
    ));
    // The stream (tally's extension) admits whoever the list shows events to.
    rows.push((
        "GET",
        "/v3/app_usage_events/stream".to_owned(),
        global(NOT_AUTH, NOT_AUTH),
    ));
    rows.push(("GET", "/v2/events".to_owned(), everyone));
    rows.push((
        "GET",
        "/v2/events/{EVENT}".to_owned(),
        [
            MISSING, INVALID, OK, OK, OK, NOT_AUTH, NOT_AUTH, OK, NOT_AUTH, OK, NOT_AUTH, SCOPE,
        ],
    ));
    rows.push((
        "GET",
        format!("/v2/events/{n}"),
        unknown(Cell(404, Some(230002)), false),
    ));
    rows.push((
        "GET",
        "/v3/audit_events".to_owned(),
        [
            MISSING, INVALID, OK, OK, OK, OK, OK, OK, OK, OK, OK, NOT_AUTH,
        ],
    ));
    rows.push((
        "GET",
        "/v3/audit_events/{EVENT}".to_owned(),
        [
            MISSING,
            INVALID,
            OK,
            OK,
            OK,
            found_10010,
            found_10010,
            OK,
            found_10010,
            OK,
            found_10010,
            NOT_AUTH,
        ],
    ));
    rows.push((
        "GET",
        format!("/v3/audit_events/{n}"),
        [
            MISSING,
            INVALID,
            found_10010,
            found_10010,
            found_10010,
            found_10010,
            found_10010,
            found_10010,
            found_10010,
            found_10010,
            found_10010,
            NOT_AUTH,
        ],
    ));
    v3_rows(&mut rows);
    rows.push(("GET", "/v2/spaces".to_owned(), everyone));
    rows.push(("GET", format!("/v2/spaces/{s}"), space_read));
    rows.push(("GET", format!("/v2/spaces/{t}"), other_space_read));
    rows.push(("GET", format!("/v2/spaces/{n}"), unknown(SPACE_404, false)));
    rows.push((
        "POST",
        "/v2/spaces".to_owned(),
        [
            MISSING,
            INVALID,
            parse_error,
            SCOPE,
            SCOPE,
            parse_error,
            parse_error,
            parse_error,
            parse_error,
            parse_error,
            parse_error,
            SCOPE,
        ],
    ));
    rows.push(("PUT", format!("/v2/spaces/{s}"), space_write(CREATED)));
    rows.push(("PUT", format!("/v2/spaces/{t}"), other_space_write(CREATED)));
    rows.push((
        "DELETE",
        format!("/v2/spaces/{s}"),
        [
            MISSING, INVALID, not_empty, SCOPE, SCOPE, NOT_AUTH, not_empty, NOT_AUTH, NOT_AUTH,
            NOT_AUTH, NOT_AUTH, SCOPE,
        ],
    ));
    rows.push((
        "DELETE",
        format!("/v2/spaces/{n}"),
        unknown(SPACE_404, true),
    ));
    for role in ["users", "managers", "auditors", "billing_managers"] {
        rows.push(("GET", format!("/v2/organizations/{o}/{role}"), org_read));
        rows.push((
            "PUT",
            format!("/v2/organizations/{o}/{role}/{TARGET}"),
            org_write(CREATED),
        ));
        rows.push((
            "DELETE",
            format!("/v2/organizations/{o}/{role}/{TARGET}"),
            org_write(GONE),
        ));
        rows.push((
            "GET",
            format!("/v2/organizations/{n}/{role}"),
            unknown(ORG_404, false),
        ));
        rows.push((
            "PUT",
            format!("/v2/organizations/{n}/{role}/{TARGET}"),
            unknown(ORG_404, true),
        ));
        rows.push((
            "DELETE",
            format!("/v2/organizations/not-a-guid/{role}/{TARGET}"),
            unknown(ORG_404, true),
        ));
    }
    for role in ["developers", "managers", "auditors"] {
        rows.push(("GET", format!("/v2/spaces/{s}/{role}"), space_read));
        rows.push(("GET", format!("/v2/spaces/{t}/{role}"), other_space_read));
        rows.push((
            "PUT",
            format!("/v2/spaces/{s}/{role}/{TARGET}"),
            space_write(CREATED),
        ));
        rows.push((
            "DELETE",
            format!("/v2/spaces/{s}/{role}/{TARGET}"),
            space_write(GONE),
        ));
        rows.push((
            "PUT",
            format!("/v2/spaces/{t}/{role}/{TARGET}"),
            other_space_write(CREATED),
        ));
        rows.push((
            "DELETE",
            format!("/v2/spaces/{t}/{role}/{TARGET}"),
            other_space_write(GONE),
        ));
        rows.push((
            "GET",
            format!("/v2/spaces/{n}/{role}"),
            unknown(SPACE_404, false),
        ));
        rows.push((
            "PUT",
            format!("/v2/spaces/{n}/{role}/{TARGET}"),
            unknown(SPACE_404, true),
        ));
        rows.push((
            "DELETE",
            format!("/v2/spaces/{n}/{role}/{TARGET}"),
            unknown(SPACE_404, true),
        ));
    }
    rows
}

/// The v3 app lifecycle (reference v3 §8): the write scope first, then visibility (404), then
/// the space developer's right (403); a read needs visibility only.
fn v3_rows(rows: &mut Vec<(&'static str, String, [Cell; 12])>) {
    let (a, d, n, o, s) = (APP, DOCKER_APP, NOWHERE, ORG, SPACE);
    let r404 = Cell(404, Some(10010));
    let unprocessable = Cell(422, Some(10008));
    //        missing  invalid  admin  adm_ro    auditor   rw    org_mgr   org_aud space_mgr dev org_user no_scope
    let list = [
        MISSING, INVALID, OK, OK, OK, OK, OK, OK, OK, OK, OK, NOT_AUTH,
    ];
    let read = [
        MISSING, INVALID, OK, OK, OK, r404, OK, r404, OK, OK, r404, NOT_AUTH,
    ];
    let unknown = [
        MISSING, INVALID, r404, r404, r404, r404, r404, r404, r404, r404, r404, NOT_AUTH,
    ];
    let unknown_write = [
        MISSING, INVALID, r404, NOT_AUTH, NOT_AUTH, r404, r404, r404, r404, r404, r404, NOT_AUTH,
    ];
    let write = |ok| {
        [
            MISSING, INVALID, ok, NOT_AUTH, NOT_AUTH, r404, NOT_AUTH, r404, NOT_AUTH, ok, r404,
            NOT_AUTH,
        ]
    };
    let secrets = [
        MISSING, INVALID, OK, OK, NOT_AUTH, r404, NOT_AUTH, r404, NOT_AUTH, OK, r404, NOT_AUTH,
    ];
    let accepted = Cell(202, None);
    rows.push(("GET", "/v3/apps".to_owned(), list));
    rows.push(("GET", format!("/v3/apps/{a}"), read));
    rows.push(("GET", format!("/v3/apps/{n}"), unknown));
    // An empty body names no space: 422 once the write scope is there.
    rows.push((
        "POST",
        "/v3/apps".to_owned(),
        [
            MISSING,
            INVALID,
            unprocessable,
            NOT_AUTH,
            NOT_AUTH,
            unprocessable,
            unprocessable,
            unprocessable,
            unprocessable,
            unprocessable,
            unprocessable,
            NOT_AUTH,
        ],
    ));
    rows.push(("PATCH", format!("/v3/apps/{a}"), write(OK)));
    rows.push(("PATCH", format!("/v3/apps/{n}"), unknown_write));
    rows.push(("DELETE", format!("/v3/apps/{a}"), write(accepted)));
    rows.push(("DELETE", format!("/v3/apps/{n}"), unknown_write));
    rows.push(("GET", format!("/v3/apps/{a}/env"), secrets));
    rows.push((
        "GET",
        format!("/v3/apps/{a}/environment_variables"),
        secrets,
    ));
    rows.push((
        "PATCH",
        format!("/v3/apps/{a}/environment_variables"),
        write(OK),
    ));
    // No droplet: 422 for whoever sees the app, before the right to write is asked.
    rows.push((
        "POST",
        format!("/v3/apps/{a}/actions/start"),
        [
            MISSING,
            INVALID,
            unprocessable,
            NOT_AUTH,
            NOT_AUTH,
            r404,
            unprocessable,
            r404,
            unprocessable,
            unprocessable,
            r404,
            NOT_AUTH,
        ],
    ));
    rows.push(("POST", format!("/v3/apps/{d}/actions/start"), write(OK)));
    rows.push(("POST", format!("/v3/apps/{d}/actions/restart"), write(OK)));
    rows.push(("POST", format!("/v3/apps/{a}/actions/stop"), write(OK)));
    rows.push(("POST", format!("/v3/apps/{n}/actions/stop"), unknown_write));
    rows.push(("GET", format!("/v3/apps/{a}/droplets/current"), unknown));
    rows.push(("GET", format!("/v3/apps/{d}/droplets/current"), read));
    rows.push(("GET", "/v3/droplets/{DROPLET}".to_owned(), read));
    rows.push(("GET", format!("/v3/droplets/{n}"), unknown));
    rows.push(("GET", "/v3/processes".to_owned(), list));
    rows.push(("GET", format!("/v3/processes/{a}"), read));
    rows.push(("GET", format!("/v3/processes/{n}"), unknown));
    rows.push(("PATCH", format!("/v3/processes/{a}"), write(OK)));
    rows.push((
        "POST",
        format!("/v3/processes/{a}/actions/scale"),
        write(accepted),
    ));
    rows.push((
        "POST",
        format!("/v3/processes/{n}/actions/scale"),
        unknown_write,
    ));
    rows.push(("GET", format!("/v3/apps/{a}/processes"), read));
    rows.push(("GET", format!("/v3/apps/{a}/processes/web"), read));
    rows.push(("GET", format!("/v3/apps/{a}/processes/worker"), unknown));
    rows.push((
        "POST",
        format!("/v3/apps/{a}/processes/web/actions/scale"),
        write(accepted),
    ));
    // Packages, builds and the current droplet: an empty body is 422 once the write scope is
    // there (it names no app, package or droplet).
    let refused_body = [
        MISSING,
        INVALID,
        unprocessable,
        NOT_AUTH,
        NOT_AUTH,
        unprocessable,
        unprocessable,
        unprocessable,
        unprocessable,
        unprocessable,
        unprocessable,
        NOT_AUTH,
    ];
    rows.push(("POST", "/v3/packages".to_owned(), refused_body));
    rows.push(("GET", format!("/v3/packages/{n}"), unknown));
    rows.push(("POST", format!("/v3/packages/{n}/upload"), unknown_write));
    rows.push(("GET", format!("/v3/apps/{a}/packages"), read));
    rows.push(("POST", "/v3/builds".to_owned(), refused_body));
    rows.push(("GET", format!("/v3/builds/{n}"), unknown));
    rows.push(("GET", format!("/v3/apps/{a}/droplets"), read));
    rows.push((
        "GET",
        format!("/v3/apps/{a}/relationships/current_droplet"),
        read,
    ));
    rows.push((
        "PATCH",
        format!("/v3/apps/{a}/relationships/current_droplet"),
        refused_body,
    ));
    rows.push(("GET", "/v3/tasks".to_owned(), list));
    rows.push(("GET", format!("/v3/tasks/{TASK}"), read));
    rows.push(("GET", format!("/v3/tasks/{n}"), unknown));
    rows.push(("GET", format!("/v3/apps/{d}/tasks"), read));
    // An empty body names no command; a finished task cannot be canceled: 422 for writers.
    rows.push(("POST", format!("/v3/apps/{d}/tasks"), write(unprocessable)));
    rows.push(("POST", format!("/v3/apps/{n}/tasks"), unknown_write));
    rows.push((
        "POST",
        format!("/v3/tasks/{TASK}/actions/cancel"),
        write(unprocessable),
    ));
    rows.push((
        "PUT",
        format!("/v3/tasks/{TASK}/cancel"),
        write(unprocessable),
    ));
    rows.push((
        "POST",
        format!("/v3/tasks/{n}/actions/cancel"),
        unknown_write,
    ));
    // The runtime's report takes HTTP Basic (user `staging`), never a bearer token.
    rows.push((
        "POST",
        format!("/internal/v4/tasks/{TASK}/completed"),
        [Cell(401, Some(10002)); 12],
    ));
    rows.push(("GET", format!("/v3/jobs/{n}"), unknown));
    rows.push(("GET", format!("/v3/spaces/{s}"), read));
    rows.push(("GET", format!("/v3/spaces/{n}"), unknown));
    rows.push((
        "GET",
        format!("/v3/organizations/{o}"),
        [
            MISSING, INVALID, OK, OK, OK, r404, OK, OK, OK, OK, OK, NOT_AUTH,
        ],
    ));
    rows.push(("GET", format!("/v3/organizations/{n}"), unknown));
}

async fn send(app: Router, method: &str, path: &str, authorization: Option<&str>) -> (Cell, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    let response = app
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    if path.contains("/stream") && status == 200 {
        // An endless stream: its status is the answer.
        return (Cell(status, None), Value::Null);
    }
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let code = (status >= 400).then(|| {
        json["code"]
            .as_u64()
            .or(json["errors"][0]["code"].as_u64())
            .unwrap_or(0) as u32
    });
    (Cell(status, code), json)
}

#[tokio::test]
async fn every_endpoint_answers_every_caller_as_the_table_says() {
    let callers = callers();
    let mut wrong = Vec::new();
    let mut cells = 0;
    for (method, path, expected) in table() {
        for ((name, authorization), want) in callers.iter().zip(expected) {
            let header = authorization.as_ref().map(|value| {
                if value.starts_with("bearer ") {
                    value.clone()
                } else {
                    format!("bearer {value}")
                }
            });
            let (service, event, usage, droplet) = service_with_event().await;
            let path = path
                .replace("{EVENT}", &event)
                .replace("{USAGE}", &usage)
                .replace("{DROPLET}", &droplet);
            let (got, body) = send(service, method, &path, header.as_deref()).await;
            cells += 1;
            if got != want {
                wrong.push(format!(
                    "{method} {path} as {name}: want {want:?}, got {got:?} {body}"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {cells} cells wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[tokio::test]
async fn role_changes_are_visible_in_the_lists_and_answer_with_the_resource() {
    let app = service().await;
    let admin = format!("bearer {}", token("x", &["cloud_controller.admin"]));
    let admin = Some(admin.as_str());
    let path = format!("/v2/spaces/{SPACE}/developers/{}", TARGET.to_uppercase());
    let (cell, body) = send(app.clone(), "PUT", &path, admin).await;
    assert_eq!(cell, CREATED);
    assert_eq!(body["metadata"]["guid"], SPACE.to_string());
    assert_eq!(body["entity"]["name"], "space");
    assert_eq!(body["entity"]["organization_guid"], ORG.to_string());
    // The upper-case spelling named the same (lower-case) UAA user.
    let (cell, list) = send(
        app.clone(),
        "GET",
        &format!("/v2/spaces/{SPACE}/developers"),
        admin,
    )
    .await;
    assert_eq!(cell, OK);
    assert_eq!(list["total_results"], 2);
    let ids: Vec<&str> = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["metadata"]["guid"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [TARGET, "dev"]);
    // Paged.
    let (_, page) = send(
        app.clone(),
        "GET",
        &format!("/v2/spaces/{SPACE}/developers?results-per-page=1&page=2"),
        admin,
    )
    .await;
    assert_eq!(page["resources"][0]["metadata"]["guid"], "dev");
    assert_eq!(
        page["prev_url"],
        format!("/v2/spaces/{SPACE}/developers?order-direction=asc&page=1&results-per-page=1")
    );
    // The org user cannot leave while holding a space role, unless recursively.
    let org_user = format!("/v2/organizations/{ORG}/users/{TARGET}");
    let (cell, body) = send(app.clone(), "DELETE", &org_user, admin).await;
    assert_eq!(cell, Cell(400, Some(10006)), "{body}");
    let (cell, _) = send(
        app.clone(),
        "DELETE",
        &format!("{org_user}?recursive=maybe"),
        admin,
    )
    .await;
    assert_eq!(cell, Cell(400, Some(10005)));
    let (cell, _) = send(
        app.clone(),
        "DELETE",
        &format!("{org_user}?recursive=true"),
        admin,
    )
    .await;
    assert_eq!(cell, GONE);
    let (_, list) = send(
        app.clone(),
        "GET",
        &format!("/v2/spaces/{SPACE}/developers"),
        admin,
    )
    .await;
    assert_eq!(list["total_results"], 1);
    // A space role for someone outside the org: CC's InvalidRelation.
    let (cell, body) = send(
        app.clone(),
        "PUT",
        &format!("/v2/spaces/{SPACE}/auditors/stranger"),
        admin,
    )
    .await;
    assert_eq!(cell, Cell(400, Some(1002)), "{body}");
    // A bad paging parameter.
    let (cell, _) = send(
        app,
        "GET",
        &format!("/v2/spaces/{SPACE}/developers?results-per-page=101"),
        admin,
    )
    .await;
    assert_eq!(cell, Cell(400, Some(10005)));
}

#[tokio::test]
async fn a_valid_token_is_echoed_in_x_user_guid() {
    let app = service().await;
    let request = Request::get(format!("/v2/spaces/{SPACE}/developers"))
        .header("Authorization", format!("bearer {}", token("dev", RW)))
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-user-guid"], "dev");
    let request = Request::get(format!("/v2/spaces/{SPACE}/developers"))
        .header("Authorization", "bearer nope")
        .body(Body::empty())
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert!(!response.headers().contains_key("x-user-guid"));
}

/// Authorization is decided with the write: a space developer's update that passed the
/// handler's check on its view, whose role is revoked before the writer decides it, is 403 and
/// writes nothing.
#[tokio::test]
async fn a_role_revoked_between_arrival_and_commit_stops_the_write() {
    use crate::auth::{Caller, Identity, Role};
    let engine = crate::tests::memory_engine();
    let developer = Membership {
        resource: SPACE,
        role: RoleKind::SpaceDeveloper,
        user: "dev".into(),
    };
    let setup = [
        Command::CreateOrg {
            guid: ORG,
            name: "org".into(),
        },
        Command::CreateSpace {
            guid: SPACE,
            org_guid: ORG,
            name: "space".into(),
        },
        Command::GrantRole(Membership {
            resource: ORG,
            role: RoleKind::OrgUser,
            user: "dev".into(),
        }),
        Command::GrantRole(developer.clone()),
        Command::CreateApp {
            guid: APP,
            attributes: tally_domain::AppAttributes {
                name: Some("app".into()),
                space_guid: Some(SPACE),
                ..Default::default()
            },
            audit_request: tally_domain::audit::Value::empty(),
        },
    ];
    for command in setup {
        engine.submit(Envelope::system(command)).await.unwrap();
    }
    let dev = Caller(Identity {
        id: "dev".into(),
        is_client: false,
        email: None,
        user_name: None,
        roles: [Role::Read, Role::Write].into_iter().collect(),
    });
    // The request arrives: the handler's check on its view passes.
    let arrival = engine.view();
    assert!(tally_domain::access::space_write(dev.subject(), &arrival.state, Some(SPACE)).is_ok());
    // The role goes before the writer reaches the request.
    engine
        .submit(Envelope::system(Command::RevokeRole {
            membership: developer,
            recursive: false,
        }))
        .await
        .unwrap();
    let before = engine.view();
    let scale = Command::UpdateApp {
        guid: APP,
        attributes: tally_domain::AppAttributes {
            instances: Some(3),
            ..Default::default()
        },
        audit_request: tally_domain::audit::Value::empty(),
    };
    let refused = engine
        .submit(dev.envelope(scale.clone()))
        .await
        .unwrap_err();
    let answer = ApiError::from(refused);
    assert_eq!((answer.status, answer.code), (StatusCode::FORBIDDEN, 10003));
    let after = engine.view();
    assert_eq!(after.meta.head, before.meta.head, "nothing was written");
    assert_eq!(after.state.app(APP).map(|a| a.instances), Some(1));
    // With the role, the same envelope commits: the check is the rule, not a blanket refusal.
    let admin = Caller(Identity {
        id: "admin".into(),
        is_client: false,
        email: None,
        user_name: None,
        roles: [Role::Admin].into_iter().collect(),
    });
    engine.submit(admin.envelope(scale)).await.unwrap();
    assert_eq!(engine.view().state.app(APP).map(|a| a.instances), Some(3));
}
