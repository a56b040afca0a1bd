//! What the v2 and v3 audit-event endpoints share: finding events by guid, and their metadata.

use serde_json::Value;
use tally_domain::{event_guid_seq, AuditEvent, Guid, Seq};

use crate::{ApiError, AppState};

/// The positions of the audit events with these guids, checked against the log (a guid
/// carries its position, but only the event there has that guid).
pub(crate) async fn seqs_of_guids(
    state: &AppState,
    view: &tally_engine::View,
    guids: &[String],
) -> Result<Vec<Seq>, ApiError> {
    let wanted: Vec<(Seq, Guid)> = guids
        .iter()
        .filter_map(|text| text.parse::<Guid>().ok())
        .filter_map(|guid| event_guid_seq(guid).map(|seq| (seq, guid)))
        .filter(|(seq, _)| *seq <= view.meta.head)
        .collect();
    let mut seqs: Vec<Seq> = wanted.iter().map(|(seq, _)| *seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    let found = state.engine.audit_events_at(seqs).await?;
    Ok(found
        .into_iter()
        .filter(|(seq, e)| wanted.contains(&(*seq, e.guid)))
        .map(|(seq, _)| seq)
        .collect())
}

/// The audit event the path's text names, if it is in the view.
pub(crate) async fn find(
    state: &AppState,
    view: &tally_engine::View,
    text: &str,
) -> Result<Option<(Seq, AuditEvent)>, ApiError> {
    match text.parse::<Guid>() {
        Ok(guid) => Ok(state.engine.audit_event(view, guid).await?),
        Err(_) => Ok(None),
    }
}

/// The metadata column as JSON.
pub(crate) fn metadata(e: &AuditEvent) -> Value {
    tally_json::to_json(&e.metadata)
}
