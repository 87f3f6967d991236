//! A Mesos v1 scheduler client in plain HTTP (no Mesos library), for tests and benchmarks:
//! SUBSCRIBE with the chunked RecordIO stream read event by event, and calls.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};

use crate::wait;

/// A SUBSCRIBE connection: reads the chunked RecordIO stream event by event.
pub struct Subscription {
    reader: BufReader<TcpStream>,
    /// The `Mesos-Stream-Id` of the subscription.
    pub stream_id: String,
    /// The framework id SUBSCRIBED gave.
    pub framework_id: String,
    /// Bytes of the RecordIO stream read so far and not yet parsed.
    buf: Vec<u8>,
    /// Every event read so far, in order.
    pub events: Vec<Value>,
    /// Indexes of the events [`Subscription::next_event`] returned already.
    returned: std::collections::HashSet<usize>,
    poll: Duration,
}

impl Subscription {
    /// SUBSCRIBEs on `127.0.0.1:port` with `framework_info` (and an id, to re-subscribe);
    /// returns once SUBSCRIBED arrived. Panics if anything is off (a test helper).
    pub fn open(port: u16, framework_info: Value, framework_id: Option<&str>) -> Self {
        let mut body =
            json!({ "type": "SUBSCRIBE", "subscribe": { "framework_info": framework_info } });
        if let Some(id) = framework_id {
            body["framework_id"] = json!({ "value": id });
            body["subscribe"]["framework_info"]["id"] = json!({ "value": id });
        }
        let body = body.to_string();
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            s,
            "POST /api/v1/scheduler HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAccept: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        // The response head may take a while on a big fleet; events are then polled.
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut reader = BufReader::new(s);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        let mut stream_id = String::new();
        let mut chunked = false;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("mesos-stream-id:") {
                stream_id = line[line.len() - v.len()..].trim().to_string();
            }
            chunked |= lower.starts_with("transfer-encoding: chunked");
        }
        assert!(chunked, "SUBSCRIBE answers chunked");
        reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert!(!stream_id.is_empty(), "a Mesos-Stream-Id header");
        let mut sub = Self {
            reader,
            stream_id,
            framework_id: String::new(),
            buf: Vec::new(),
            events: Vec::new(),
            returned: Default::default(),
            poll: Duration::from_millis(300),
        };
        let first = sub.next_event(|e| e["type"] == "SUBSCRIBED", Duration::from_secs(10));
        assert_eq!(sub.events[0]["type"], "SUBSCRIBED", "the first event");
        sub.framework_id = first["subscribed"]["framework_id"]["value"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            first["subscribed"]["heartbeat_interval_seconds"]
                .as_f64()
                .unwrap()
                > 0.0
        );
        sub
    }

    /// How long [`Subscription::pump`] waits for more data (300 ms by default; benchmarks
    /// that time events use a few ms).
    pub fn set_poll_timeout(&mut self, t: Duration) {
        self.poll = t;
        let _ = self.reader.get_mut().set_read_timeout(Some(t));
    }

    /// Reads chunks that have arrived and splits them into RecordIO records; false once the
    /// stream has ended.
    pub fn pump(&mut self) -> bool {
        let mut open = true;
        loop {
            let mut size = String::new();
            match self.reader.read_line(&mut size) {
                Ok(0) => {
                    open = false;
                    break;
                }
                Err(_) => break,
                Ok(_) => {}
            }
            let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
                continue;
            };
            if n == 0 {
                open = false;
                break;
            }
            let mut chunk = vec![0u8; n + 2];
            self.reader
                .get_mut()
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            self.reader.read_exact(&mut chunk).unwrap();
            self.reader
                .get_mut()
                .set_read_timeout(Some(self.poll))
                .unwrap();
            self.buf.extend_from_slice(&chunk[..n]);
        }
        // `<length>\n<json>` records, back to back.
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let len: usize = std::str::from_utf8(&self.buf[..nl])
                .unwrap()
                .parse()
                .expect("RecordIO length");
            if self.buf.len() < nl + 1 + len {
                break;
            }
            let v: Value = serde_json::from_slice(&self.buf[nl + 1..nl + 1 + len]).unwrap();
            self.events.push(v);
            self.buf.drain(..nl + 1 + len);
        }
        open
    }

    /// The first event not yet returned that matches `pred`.
    pub fn next_event(&mut self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        let (i, e) = wait::until("an event on the scheduler stream", timeout, || {
            self.pump();
            self.events
                .iter()
                .enumerate()
                .find(|(i, e)| !self.returned.contains(i) && pred(e))
                .map(|(i, e)| (i, e.clone()))
        })
        .unwrap();
        self.returned.insert(i);
        e
    }

    /// The ids of the offers this framework holds: every offer it was sent, less those
    /// rescinded (an offer it used or declined is unknown to the master, which ignores it).
    pub fn offers_held(&mut self) -> Vec<Value> {
        self.pump();
        let rescinded: Vec<&Value> = self
            .events
            .iter()
            .filter(|e| e["type"] == "RESCIND")
            .map(|e| &e["rescind"]["offer_id"])
            .collect();
        self.events
            .iter()
            .filter(|e| e["type"] == "OFFERS")
            .flat_map(|e| {
                e["offers"]["offers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|o| o["id"].clone())
            .filter(|id| !rescinded.contains(&id))
            .collect()
    }

    /// The UPDATE statuses of `task` read so far.
    pub fn updates(&mut self, task: &str) -> Vec<Value> {
        self.pump();
        self.events
            .iter()
            .filter(|e| e["type"] == "UPDATE" && e["update"]["status"]["task_id"]["value"] == task)
            .map(|e| e["update"]["status"].clone())
            .collect()
    }
}

/// A scheduler call on its own connection; returns status and body.
pub fn call(port: u16, stream_id: Option<&str>, content_type: &str, body: &str) -> (u16, String) {
    post(port, "/api/v1/scheduler", stream_id, content_type, body)
}

/// A POST of `body` to `path` on the master's port (e.g. `/master/teardown`, form-encoded);
/// returns status and body.
pub fn post(
    port: u16,
    path: &str,
    stream_id: Option<&str>,
    content_type: &str,
    body: &str,
) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut req = agent
        .post(&format!("http://127.0.0.1:{port}{path}"))
        .header("Content-Type", content_type);
    if let Some(id) = stream_id {
        req = req.header("Mesos-Stream-Id", id);
    }
    let mut resp = req.send(body).unwrap();
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

/// A call of `sub`'s framework on its stream.
pub fn framework_call(port: u16, sub: &Subscription, body: Value) -> (u16, String) {
    let mut body = body;
    body["framework_id"] = json!({ "value": sub.framework_id });
    call(
        port,
        Some(&sub.stream_id),
        "application/json",
        &body.to_string(),
    )
}
