//! Events JS completes before they are logged (`leak`, `recycle`). The native side decides
//! them; JS knows where the heap grew (the allocation profile, the named jobs). JS gets a
//! draft (`{ draftId, draft }`), measures, and hands back an `Attribution`: the event is
//! then rendered once, with it, keeping the draft's envelope and time (it describes the
//! moment it was decided), and that rendering is what JS emits and the report holds.
//! Where JS cannot complete it (gone, stuck past the deadline), the draft is what the
//! native side writes.

use std::collections::VecDeque;

use serde_json::{Map, Value};

use super::Monitor;
use crate::event::{self, Attribution, Envelope, Event};

/// Drafts JS has not completed yet, at most this many (the oldest are dropped: JS that
/// never completes them must not grow the process).
const OPEN_DRAFTS: usize = 16;

/// An event waiting for JS, and the rendering the native side writes without it.
pub(super) struct Draft {
    event: Event,
    envelope: Envelope,
    time: String,
    rendered: Map<String, Value>,
}

impl Draft {
    pub(super) fn new(event: Event, envelope: Envelope) -> Draft {
        let time = event::iso8601_now();
        let rendered = event.to_json_at(&envelope, &time, &Attribution::default());
        Draft {
            event,
            envelope,
            time,
            rendered,
        }
    }

    /// The event as the native side writes it when JS cannot complete it.
    pub(super) fn rendered(&self) -> &Map<String, Value> {
        &self.rendered
    }

    fn complete(&self, attribution: &Attribution) -> Map<String, Value> {
        self.event
            .to_json_at(&self.envelope, &self.time, attribution)
    }
}

#[derive(Default)]
pub(super) struct Drafts {
    next_id: u64,
    open: VecDeque<(u64, Draft)>,
}

impl Drafts {
    /// Keeps `draft` until JS completes it; returns its id.
    fn open(&mut self, draft: Draft) -> u64 {
        self.next_id += 1;
        if self.open.len() == OPEN_DRAFTS {
            self.open.pop_front();
        }
        self.open.push_back((self.next_id, draft));
        self.next_id
    }

    fn take(&mut self, id: u64) -> Option<Draft> {
        let index = self.open.iter().position(|(open, _)| *open == id)?;
        self.open.remove(index).map(|(_, draft)| draft)
    }
}

/// What JS receives for a draft: `{ draftId, draft }`.
fn message(id: u64, draft: Map<String, Value>) -> Map<String, Value> {
    let mut message = Map::new();
    message.insert("draftId".into(), Value::from(id));
    message.insert("draft".into(), Value::Object(draft));
    message
}

impl Monitor {
    /// A draft of `event` with this moment's envelope and time.
    pub(super) fn draft(&self, event: Event) -> Draft {
        Draft::new(event, self.envelope())
    }

    /// Keeps `draft` for JS to complete and returns the message JS receives for it.
    pub(super) fn open_draft(&self, draft: Draft) -> Map<String, Value> {
        let rendered = draft.rendered.clone();
        let id = self.drafts.lock().open(draft);
        message(id, rendered)
    }

    /// Hands `message` (from `open_draft`) to JS; when JS can no longer receive, the
    /// draft is dropped and written to fd 2 as it is.
    pub(super) fn deliver_draft(&self, message: Map<String, Value>) {
        let id = message.get("draftId").and_then(Value::as_u64);
        if self.sink.deliver(message) {
            return;
        }
        if let Some(draft) = id.and_then(|id| self.drafts.lock().take(id)) {
            self.remember(draft.rendered());
            event::write_stderr(draft.rendered(), self.config.log.native());
        }
    }

    /// JS measured where the heap grew for draft `id`: renders the event once with it,
    /// and, for the recycle under way, keeps that rendering (and `report_profile`, the
    /// report's `profile` section) for the report. `None`: no such draft (completed
    /// already, or dropped as too old).
    pub fn complete(
        &self,
        id: u64,
        attribution: &Attribution,
        report_profile: Option<Value>,
    ) -> Option<Map<String, Value>> {
        let draft = self.drafts.lock().take(id)?;
        let object = draft.complete(attribution);
        if matches!(draft.event, Event::Recycle(_)) {
            let mut recycle = self.recycle.lock();
            if recycle.complete_recycle_event(draft.rendered(), object.clone()) {
                // Under the recycle lock: a native exit reads both after it.
                if report_profile.is_some() {
                    *self.report_profile.lock() = report_profile;
                }
            }
        }
        self.remember(&object);
        Some(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Reason;

    fn leak() -> Event {
        Event::Leak {
            slope_per_min: 2.0 * 1048576.0,
            threshold_per_min: 1048576.0,
            window_ms: 60_000,
            points: 5,
        }
    }

    #[test]
    fn a_draft_is_taken_once_and_the_oldest_go_first() {
        let mut drafts = Drafts::default();
        let first = drafts.open(Draft::new(leak(), Envelope::default()));
        assert!(drafts.take(first).is_some());
        assert!(drafts.take(first).is_none(), "completed once");
        let ids: Vec<u64> = (0..OPEN_DRAFTS + 1)
            .map(|_| drafts.open(Draft::new(leak(), Envelope::default())))
            .collect();
        assert!(drafts.take(ids[0]).is_none(), "dropped as too old");
        assert!(drafts.take(ids[OPEN_DRAFTS]).is_some());
        assert_eq!(drafts.open.len(), OPEN_DRAFTS - 1);
    }

    #[test]
    fn the_completed_event_keeps_the_drafts_moment_and_adds_the_attribution() {
        let envelope = Envelope {
            uptime_ms: 1234,
            rss: 100,
            heap_used: 50,
            heap_limit: 200,
            generation: None,
        };
        let recycle = crate::event::Recycle::new(Reason::Heap, 190, 180, 3);
        let draft = Draft::new(Event::Recycle(Box::new(recycle)), envelope);
        let attribution = Attribution {
            profile_skipped: Some("PROFILE=off".into()),
            ..Attribution::default()
        };
        let completed = draft.complete(&attribution);
        let mut expected = draft.rendered().clone();
        expected.insert("profileSkipped".into(), Value::from("PROFILE=off"));
        assert_eq!(completed, expected, "the same event, with the attribution");
        assert_eq!(
            draft.complete(&Attribution::default()),
            *draft.rendered(),
            "nothing found: the draft as it is"
        );
        let message = message(7, draft.rendered().clone());
        assert_eq!(message["draftId"], Value::from(7));
        assert_eq!(message["draft"]["uptimeMs"], Value::from(1234));
    }
}
