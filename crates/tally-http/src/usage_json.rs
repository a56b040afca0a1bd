//! The v2 and v3 usage-event resources written straight into a page's bytes: the hot path of
//! a consumer catching up. The serde structs of `usage_endpoints` ([`V2Usage`], [`V3Usage`])
//! stay the definition; these writers produce the same bytes (property tests below) without
//! a serializer's per-byte escaping of text that cannot need it (guids, timestamps, states,
//! numbers) or a `String` per timestamp and link. Free text (names, types, states of
//! packages) is escaped by `serde_json`.
//!
//! [`V2Usage`]: crate::usage_endpoints::V2Usage
//! [`V3Usage`]: crate::usage_endpoints::V3Usage

use chrono::{Datelike, Timelike};
use tally_domain::model::obfuscate_url_credentials;
use tally_domain::{Guid, Timestamp, UsageEvent};

/// What every resource of one v3 page shares: its links' prefix, as JSON text without the
/// closing quote (`"https://api.example.com/v3/app_usage_events/`).
pub struct V3Links {
    prefix: Vec<u8>,
}

impl V3Links {
    /// The links of events served under `base` (the external URL).
    pub fn new(base: &str) -> Result<Self, serde_json::Error> {
        let mut prefix = serde_json::to_vec(&format!("{base}/v3/app_usage_events/"))?;
        prefix.pop();
        Ok(Self { prefix })
    }
}

/// Writes `e`'s v3 resource, byte for byte what `serde_json` writes for
/// [`crate::usage_endpoints::v3_resource`].
pub fn v3(out: &mut Vec<u8>, links: &V3Links, e: &UsageEvent) -> Result<(), serde_json::Error> {
    out.extend_from_slice(b"{\"guid\":");
    guid(out, e.guid);
    out.extend_from_slice(b",\"created_at\":");
    stamp(out, e.created_at)?;
    out.extend_from_slice(b",\"updated_at\":");
    stamp(out, e.created_at)?;
    out.extend_from_slice(b",\"state\":{\"current\":");
    plain(out, e.state.as_str());
    out.extend_from_slice(b",\"previous\":");
    maybe_plain(out, e.previous_state.map(|s| s.as_str()));
    out.extend_from_slice(b"},\"app\":{\"guid\":");
    maybe_guid(out, e.parent_app_guid);
    out.extend_from_slice(b",\"name\":");
    maybe_text(out, e.parent_app_name.as_deref())?;
    // CC maps the empty process guid of staging and task events to null.
    out.extend_from_slice(b"},\"process\":{\"guid\":");
    maybe_text(out, (!e.app_guid.is_empty()).then_some(e.app_guid.as_str()))?;
    out.extend_from_slice(b",\"type\":");
    maybe_text(out, e.process_type.as_deref())?;
    out.extend_from_slice(b"},\"space\":{\"guid\":");
    guid(out, e.space_guid);
    out.extend_from_slice(b",\"name\":");
    text(out, &e.space_name)?;
    out.extend_from_slice(b"},\"organization\":{\"guid\":");
    guid(out, e.org_guid);
    out.extend_from_slice(b"},\"buildpack\":{\"guid\":");
    maybe_guid(out, e.buildpack_guid);
    out.extend_from_slice(b",\"name\":");
    maybe_text(out, e.buildpack_name.as_deref())?;
    out.extend_from_slice(b"},\"task\":{\"guid\":");
    maybe_guid(out, e.task_guid);
    out.extend_from_slice(b",\"name\":");
    maybe_text(out, e.task_name.as_deref())?;
    out.extend_from_slice(b"},\"memory_in_mb_per_instance\":{\"current\":");
    number(out, e.memory_in_mb_per_instance);
    out.extend_from_slice(b",\"previous\":");
    maybe_number(out, e.previous_memory_in_mb_per_instance);
    out.extend_from_slice(b"},\"instance_count\":{\"current\":");
    number(out, e.instance_count);
    out.extend_from_slice(b",\"previous\":");
    maybe_number(out, e.previous_instance_count);
    out.extend_from_slice(b"},\"links\":{\"self\":{\"href\":");
    out.extend_from_slice(&links.prefix);
    out.extend_from_slice(e.guid.encode(&mut [0; 36]).as_bytes());
    out.extend_from_slice(b"\"}}}");
    Ok(())
}

/// Writes `e`'s v2 resource, byte for byte what `serde_json` writes for
/// [`crate::usage_endpoints::v2_resource`].
pub fn v2(out: &mut Vec<u8>, e: &UsageEvent) -> Result<(), serde_json::Error> {
    let mut buffer = [0; 36];
    let id = e.guid.encode(&mut buffer).as_bytes();
    out.extend_from_slice(b"{\"metadata\":{\"guid\":\"");
    out.extend_from_slice(id);
    out.extend_from_slice(b"\",\"url\":\"/v2/app_usage_events/");
    out.extend_from_slice(id);
    out.extend_from_slice(b"\",\"created_at\":");
    stamp(out, e.created_at)?;
    out.extend_from_slice(b"},\"entity\":{\"state\":");
    plain(out, e.state.as_str());
    out.extend_from_slice(b",\"previous_state\":");
    maybe_plain(out, e.previous_state.map(|s| s.as_str()));
    out.extend_from_slice(b",\"memory_in_mb_per_instance\":");
    number(out, e.memory_in_mb_per_instance);
    out.extend_from_slice(b",\"previous_memory_in_mb_per_instance\":");
    maybe_number(out, e.previous_memory_in_mb_per_instance);
    out.extend_from_slice(b",\"instance_count\":");
    number(out, e.instance_count);
    out.extend_from_slice(b",\"previous_instance_count\":");
    maybe_number(out, e.previous_instance_count);
    out.extend_from_slice(b",\"app_guid\":");
    text(out, &e.app_guid)?;
    out.extend_from_slice(b",\"app_name\":");
    text(out, &e.app_name)?;
    out.extend_from_slice(b",\"space_guid\":");
    guid(out, e.space_guid);
    out.extend_from_slice(b",\"space_name\":");
    text(out, &e.space_name)?;
    out.extend_from_slice(b",\"org_guid\":");
    guid(out, e.org_guid);
    out.extend_from_slice(b",\"buildpack_guid\":");
    maybe_guid(out, e.buildpack_guid);
    out.extend_from_slice(b",\"buildpack_name\":");
    // v2 obfuscates credentials again when presenting (v3 does not).
    match e.buildpack_name.as_deref() {
        Some(name) => text(out, &obfuscate_url_credentials(name))?,
        None => null(out),
    }
    out.extend_from_slice(b",\"package_state\":");
    maybe_text(out, e.package_state.as_deref())?;
    out.extend_from_slice(b",\"previous_package_state\":");
    maybe_text(out, e.previous_package_state.as_deref())?;
    out.extend_from_slice(b",\"parent_app_guid\":");
    maybe_guid(out, e.parent_app_guid);
    out.extend_from_slice(b",\"parent_app_name\":");
    maybe_text(out, e.parent_app_name.as_deref())?;
    out.extend_from_slice(b",\"process_type\":");
    maybe_text(out, e.process_type.as_deref())?;
    out.extend_from_slice(b",\"task_name\":");
    maybe_text(out, e.task_name.as_deref())?;
    out.extend_from_slice(b",\"task_guid\":");
    maybe_guid(out, e.task_guid);
    out.extend_from_slice(b"}}");
    Ok(())
}

fn null(out: &mut Vec<u8>) {
    out.extend_from_slice(b"null");
}

/// A string that needs no escaping (a state's name).
fn plain(out: &mut Vec<u8>, s: &'static str) {
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

fn maybe_plain(out: &mut Vec<u8>, s: Option<&'static str>) {
    match s {
        Some(s) => plain(out, s),
        None => null(out),
    }
}

fn guid(out: &mut Vec<u8>, g: Guid) {
    out.push(b'"');
    out.extend_from_slice(g.encode(&mut [0; 36]).as_bytes());
    out.push(b'"');
}

fn maybe_guid(out: &mut Vec<u8>, g: Option<Guid>) {
    match g {
        Some(g) => guid(out, g),
        None => null(out),
    }
}

fn text(out: &mut Vec<u8>, s: &str) -> Result<(), serde_json::Error> {
    serde_json::to_writer(out, s)
}

fn maybe_text(out: &mut Vec<u8>, s: Option<&str>) -> Result<(), serde_json::Error> {
    match s {
        Some(s) => text(out, s),
        None => {
            null(out);
            Ok(())
        }
    }
}

fn number(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn maybe_number(out: &mut Vec<u8>, n: Option<i64>) {
    match n {
        Some(n) => number(out, n),
        None => null(out),
    }
}

/// CC's timestamp, `"YYYY-MM-DDThh:mm:ssZ"`, as `usage_endpoints`' `stamp` writes it; a year
/// outside 0..=9999 or a leap second goes the long way, through chrono.
fn stamp(out: &mut Vec<u8>, t: Timestamp) -> Result<(), serde_json::Error> {
    let (year, nanos) = (t.year(), t.nanosecond());
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return text(out, &t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    }
    let digits = |n: u32, width: usize, at: &mut [u8]| {
        let mut n = n;
        for slot in at[..width].iter_mut().rev() {
            *slot = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    let mut b = *b"\"0000-00-00T00:00:00Z\"";
    digits(year.unsigned_abs(), 4, &mut b[1..]);
    digits(t.month(), 2, &mut b[6..]);
    digits(t.day(), 2, &mut b[9..]);
    digits(t.hour(), 2, &mut b[12..]);
    digits(t.minute(), 2, &mut b[15..]);
    digits(t.second(), 2, &mut b[18..]);
    out.extend_from_slice(&b);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;
    use tally_domain::UsageState;

    fn guid() -> impl Strategy<Value = Guid> {
        any::<u128>().prop_map(Guid::from_u128)
    }

    /// Text with what JSON must escape: quotes, backslashes, controls, and non-ASCII.
    fn text() -> impl Strategy<Value = String> {
        "[a-z\"\\\\\u{0}-\u{1f}é☃/ ]{0,12}"
    }

    fn time() -> impl Strategy<Value = Timestamp> {
        prop_oneof![
            // Any second from year 0 to 9999.
            (-62_167_219_200i64..253_402_300_799, 0u32..1_000_000_000)
                .prop_map(|(s, n)| chrono::Utc.timestamp_opt(s, n).unwrap()),
            // Outside four digits, and a leap second: the long way.
            Just(chrono::Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap()),
            Just(
                chrono::Utc
                    .with_ymd_and_hms(-1, 12, 31, 23, 59, 59)
                    .unwrap()
            ),
            Just(
                chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
                    .unwrap()
                    .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
                    .unwrap()
                    .and_utc()
            ),
        ]
    }

    prop_compose! {
        fn event()(
            (g, at, state, previous) in (guid(), time(), 0..12usize, proptest::option::of(0..12usize)),
            (instances, previous_instances, memory, previous_memory) in
                (any::<i64>(), any::<Option<i64>>(), any::<i64>(), any::<Option<i64>>()),
            (app_guid, app_name, space_guid, space_name, org_guid) in
                (prop_oneof![Just(String::new()), text()], text(), guid(), text(), guid()),
            (buildpack_guid, buildpack_name, package_state, previous_package_state) in (
                proptest::option::of(guid()),
                proptest::option::of(prop_oneof![text(), Just("https://u:p@h/x".to_owned())]),
                proptest::option::of(text()),
                proptest::option::of(text()),
            ),
            (parent_app_guid, parent_app_name, process_type, task_guid, task_name) in (
                proptest::option::of(guid()),
                proptest::option::of(text()),
                proptest::option::of(text()),
                proptest::option::of(guid()),
                proptest::option::of(text()),
            ),
        ) -> UsageEvent {
            UsageEvent {
                guid: g,
                created_at: at,
                state: UsageState::ALL[state],
                previous_state: previous.map(|p| UsageState::ALL[p]),
                instance_count: instances,
                previous_instance_count: previous_instances,
                memory_in_mb_per_instance: memory,
                previous_memory_in_mb_per_instance: previous_memory,
                app_guid,
                app_name,
                space_guid,
                space_name,
                org_guid,
                buildpack_guid,
                buildpack_name,
                package_state,
                previous_package_state,
                parent_app_guid,
                parent_app_name,
                process_type,
                task_guid,
                task_name,
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn the_v3_writer_writes_what_serde_writes(e in event(), base in "(https?://[a-z.:0-9]{1,20})?[\"\\\\/]?") {
            let mut fast = Vec::new();
            v3(&mut fast, &V3Links::new(&base).unwrap(), &e).unwrap();
            let expected =
                serde_json::to_vec(&crate::usage_endpoints::v3_resource(&base, &e)).unwrap();
            prop_assert_eq!(String::from_utf8(fast).unwrap(), String::from_utf8(expected).unwrap());
        }

        #[test]
        fn the_v2_writer_writes_what_serde_writes(e in event()) {
            let mut fast = Vec::new();
            v2(&mut fast, &e).unwrap();
            let expected = serde_json::to_vec(&crate::usage_endpoints::v2_resource(&e)).unwrap();
            prop_assert_eq!(String::from_utf8(fast).unwrap(), String::from_utf8(expected).unwrap());
        }
    }
}
