//! Per-region health endpoints that can be switched to failing or slow — each also serving
//! `/metrics` (request counts by code and a latency histogram that follow the mode, for
//! Prometheus) — and a sink that records Slack and webhook messages. Control: `POST /control/health/<region>/<mode>` on
//! the sink (mode ok, fail, slow, down or flap); `GET /messages` lists what the sink received.

use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::http::{read_request, Request};

/// How a region's health endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// 200 at once.
    Ok,
    /// 503 at once.
    Fail,
    /// 200 after 11 s: slower than the 10 s a health check allows.
    Slow,
    /// The connection is closed without an answer.
    Down,
    /// 503 and 200 by turns, one answer each: flapping that no cadence of checks sees as
    /// failing twice in a row.
    Flap,
}

impl Health {
    pub fn parse(s: &str) -> Option<Health> {
        Some(match s {
            "ok" => Health::Ok,
            "fail" => Health::Fail,
            "slow" => Health::Slow,
            "down" => Health::Down,
            "flap" => Health::Flap,
            _ => return None,
        })
    }
}

struct State {
    health: BTreeMap<String, Health>,
    /// Per region in Health::Flap: whether its next answer is a 503.
    flap_fails_next: BTreeMap<String, bool>,
    messages: Vec<Value>,
    traffic: BTreeMap<String, Traffic>,
}

impl State {
    fn set_health(&mut self, region: &str, mode: Health) {
        self.health.insert(region.to_string(), mode);
        // Flapping starts with a failed answer.
        self.flap_fails_next.remove(region);
    }
}

/// A region's request counters: each scrape of /metrics stands for 100 more requests, served
/// as the mode says (ok: all 200 in 20 ms; fail: half 503; slow: all over 10 s).
#[derive(Default)]
struct Traffic {
    ok: u64,
    errors: u64,
    /// Cumulative counts per bucket of LATENCY_BUCKETS, then +Inf.
    buckets: [u64; 7],
    seconds: f64,
}

const LATENCY_BUCKETS: [&str; 6] = ["0.05", "0.1", "0.2", "0.5", "1", "10"];

impl Traffic {
    fn advance(&mut self, mode: Health) {
        let (ok, errors, latency, from) = match mode {
            Health::Ok | Health::Down => (100, 0, 0.02, 0),
            Health::Fail | Health::Flap => (50, 50, 0.02, 0),
            Health::Slow => (100, 0, 11.0, 6),
        };
        self.ok += ok;
        self.errors += errors;
        for b in &mut self.buckets[from..] {
            *b += 100;
        }
        self.seconds += latency * 100.0;
    }

    fn exposition(&self, region: &str) -> String {
        let mut s = String::from("# TYPE http_requests_total counter\n");
        s.push_str(&format!(
            "http_requests_total{{region=\"{region}\",code=\"200\"}} {}\n",
            self.ok
        ));
        s.push_str(&format!(
            "http_requests_total{{region=\"{region}\",code=\"503\"}} {}\n",
            self.errors
        ));
        s.push_str("# TYPE http_request_duration_seconds histogram\n");
        for (i, le) in LATENCY_BUCKETS.iter().chain(["+Inf"].iter()).enumerate() {
            s.push_str(&format!(
                "http_request_duration_seconds_bucket{{region=\"{region}\",le=\"{le}\"}} {}\n",
                self.buckets[i]
            ));
        }
        s.push_str(&format!(
            "http_request_duration_seconds_sum{{region=\"{region}\"}} {}\nhttp_request_duration_seconds_count{{region=\"{region}\"}} {}\n",
            self.seconds,
            self.buckets[6]
        ));
        s
    }
}

pub struct Web {
    /// (region, port) of each health endpoint.
    pub health_ports: Vec<(String, u16)>,
    pub sink_port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

fn reply(stream: &mut TcpStream, code: u16, body: &str) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

fn reply_text(stream: &mut TcpStream, body: &str) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

fn listen(
    stop: Arc<AtomicBool>,
    handler: impl Fn(TcpStream) + Send + Sync + 'static,
) -> std::io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let handler = Arc::new(handler);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let Ok(conn) = conn else { continue };
            let h = handler.clone();
            std::thread::spawn(move || h(conn));
        }
    });
    Ok(port)
}

impl Web {
    pub fn start(regions: &[&str]) -> std::io::Result<Web> {
        let state = Arc::new(Mutex::new(State {
            health: regions
                .iter()
                .map(|r| (r.to_string(), Health::Ok))
                .collect(),
            flap_fails_next: BTreeMap::new(),
            messages: Vec::new(),
            traffic: BTreeMap::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let mut health_ports = Vec::new();
        for region in regions {
            let (st, region_name) = (state.clone(), region.to_string());
            let port = listen(stop.clone(), move |conn| {
                let mut out = match conn.try_clone() {
                    Ok(c) => c,
                    Err(_) => return,
                };
                let mut reader = BufReader::new(conn);
                while let Some(Request { path, .. }) = read_request(&mut reader) {
                    let mode = st
                        .lock()
                        .unwrap()
                        .health
                        .get(&region_name)
                        .copied()
                        .unwrap_or(Health::Ok);
                    if path == "/metrics" {
                        if mode == Health::Down {
                            return;
                        }
                        let text = {
                            let mut state = st.lock().unwrap();
                            let t = state.traffic.entry(region_name.clone()).or_default();
                            t.advance(mode);
                            t.exposition(&region_name)
                        };
                        if reply_text(&mut out, &text).is_err() {
                            return;
                        }
                        continue;
                    }
                    let mode = match mode {
                        Health::Flap => {
                            let mut state = st.lock().unwrap();
                            let fails = state
                                .flap_fails_next
                                .entry(region_name.clone())
                                .or_insert(true);
                            let now = *fails;
                            *fails = !now;
                            if now {
                                Health::Fail
                            } else {
                                Health::Ok
                            }
                        }
                        other => other,
                    };
                    let result = match mode {
                        Health::Ok | Health::Flap => reply(
                            &mut out,
                            200,
                            &json!({"status": "ok", "region": region_name}).to_string(),
                        ),
                        Health::Fail => reply(
                            &mut out,
                            503,
                            &json!({"status": "failing", "region": region_name}).to_string(),
                        ),
                        Health::Slow => {
                            std::thread::sleep(Duration::from_secs(11));
                            reply(
                                &mut out,
                                200,
                                &json!({"status": "slow", "region": region_name}).to_string(),
                            )
                        }
                        Health::Down => return,
                    };
                    if result.is_err() {
                        return;
                    }
                }
            })?;
            health_ports.push((region.to_string(), port));
        }
        let st = state.clone();
        let sink_port = listen(stop.clone(), move |conn| {
            let mut out = match conn.try_clone() {
                Ok(c) => c,
                Err(_) => return,
            };
            let mut reader = BufReader::new(conn);
            while let Some(Request {
                method, path, body, ..
            }) = read_request(&mut reader)
            {
                let result = if let Some(rest) = path.strip_prefix("/control/health/") {
                    let mut parts = rest.split('/');
                    match (parts.next(), parts.next().and_then(Health::parse)) {
                        (Some(region), Some(mode))
                            if st.lock().unwrap().health.contains_key(region) =>
                        {
                            st.lock().unwrap().set_health(region, mode);
                            reply(&mut out, 200, "{}")
                        }
                        _ => reply(&mut out, 404, "{\"error\": \"unknown region or mode\"}"),
                    }
                } else if method == "GET" && path == "/messages" {
                    let messages = st.lock().unwrap().messages.clone();
                    reply(&mut out, 200, &Value::Array(messages).to_string())
                } else if method == "POST" {
                    let body = String::from_utf8_lossy(&body).into_owned();
                    let payload = serde_json::from_str(&body).unwrap_or(Value::String(body));
                    st.lock()
                        .unwrap()
                        .messages
                        .push(json!({"path": path, "payload": payload}));
                    reply(&mut out, 200, "ok")
                } else {
                    reply(&mut out, 404, "{}")
                };
                if result.is_err() {
                    return;
                }
            }
        })?;
        Ok(Web {
            health_ports,
            sink_port,
            state,
            stop,
        })
    }

    pub fn health_url(&self, region: &str) -> String {
        let port = self
            .health_ports
            .iter()
            .find(|(r, _)| r == region)
            .map(|(_, p)| *p)
            .unwrap_or(0);
        format!("http://127.0.0.1:{port}/health")
    }

    /// (region, host:port) of each region's /metrics, for Prometheus.
    pub fn metrics_targets(&self) -> Vec<(String, String)> {
        self.health_ports
            .iter()
            .map(|(r, p)| (r.clone(), format!("127.0.0.1:{p}")))
            .collect()
    }

    pub fn sink_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.sink_port)
    }

    pub fn set_health(&self, region: &str, mode: Health) {
        self.state.lock().unwrap().set_health(region, mode);
    }

    /// Messages received, each #{path, payload}.
    pub fn messages(&self) -> Vec<Value> {
        self.state.lock().unwrap().messages.clone()
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for (_, port) in &self.health_ports {
            let _ = TcpStream::connect(("127.0.0.1", *port));
        }
        let _ = TcpStream::connect(("127.0.0.1", self.sink_port));
    }
}
