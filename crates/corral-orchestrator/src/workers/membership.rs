//! Membership: this orchestrator's heartbeat, and the dispatcher's lease (the leader is the
//! one orchestrator that dispatches, probes nodes and adopts what stopped orchestrators
//! followed). The lease is renewed every round and lapses by itself when this process
//! stops, pauses or loses the database.

use crate::orchestrator::{Orchestrator, LEADER_TTL};
use crate::store::StoreError;

pub async fn round(o: &Orchestrator) -> Result<(), StoreError> {
    let store = o.store();
    let heartbeat = store
        .heartbeat(o.id(), o.config().advertise_url.as_deref())
        .await;
    let lead = store.lead(o.id(), LEADER_TTL).await;
    let was = o.is_leader();
    let fence = lead.as_ref().ok().cloned().flatten();
    let now = fence.is_some();
    // A failed renewal keeps the lease we had until it expires by itself (`fence()`
    // checks the expiry): the database may be back before then.
    if lead.is_ok() {
        o.inner.fence.send_replace(fence);
    }
    if now && !was {
        tracing::info!(orchestrator = %o.id(), "this orchestrator now dispatches");
        o.wake();
    } else if was && !now && lead.is_ok() {
        tracing::warn!(orchestrator = %o.id(), "another orchestrator dispatches now");
    }
    if let Ok(mut healthy) = o.inner.healthy_since.lock() {
        if heartbeat.is_ok() && lead.is_ok() {
            healthy.get_or_insert_with(std::time::Instant::now);
        } else {
            *healthy = None;
        }
    }
    heartbeat?;
    lead.map(|_| ())
}
