//! Marathon's HTTP callbacks (`/v2/eventSubscriptions`): the registered URLs, kept in the store,
//! and the `subscribe_event` / `unsubscribe_event` Marathon sends when one comes or goes. The
//! delivery is the edge's (`crate::callbacks`).

#[allow(unused_imports)]
use super::*;

impl Core {
    /// The callback URLs, sorted.
    pub fn callback_urls(&self) -> Vec<String> {
        self.callbacks.iter().cloned().collect()
    }

    /// `POST /v2/eventSubscriptions?callbackUrl=`: `url` (already checked) receives every
    /// event from now on. Answers Marathon's `subscribe_event`, also sent as an event.
    pub fn subscribe_callback(&mut self, now: Millis, url: &str, client_ip: &str) -> Value {
        if self.callbacks.insert(url.to_string()) {
            self.dirty_records
                .insert((Table::EventSubscriptions, url.to_string()));
            tracing::info!(url, client = client_ip, "event callback subscribed");
        }
        self.callback_event(now, "subscribe_event", url, client_ip)
    }

    /// `DELETE /v2/eventSubscriptions?callbackUrl=` (or a callback dropped after failing):
    /// `url` receives nothing more. Answers Marathon's `unsubscribe_event`, also sent.
    pub fn unsubscribe_callback(&mut self, now: Millis, url: &str, client_ip: &str) -> Value {
        if self.callbacks.remove(url) {
            self.dirty_records
                .remove(&(Table::EventSubscriptions, url.to_string()));
            self.writes
                .insert((Table::EventSubscriptions, url.to_string()), None);
            tracing::info!(url, by = client_ip, "event callback unsubscribed");
        }
        self.callback_event(now, "unsubscribe_event", url, client_ip)
    }

    fn callback_event(&mut self, now: Millis, kind: &str, url: &str, client_ip: &str) -> Value {
        let body = json!({
            "callbackUrl": url,
            "clientIp": client_ip,
            "eventType": kind,
            "timestamp": rfc3339(now),
        });
        self.event(now, kind, body.clone());
        body
    }
}
