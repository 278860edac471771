//! Per-region health endpoints that can be switched to failing or slow, and a sink that
//! records Slack and webhook messages. Control: `POST /control/health/<region>/<mode>` on
//! the sink (mode ok, fail, slow or down); `GET /messages` lists what the sink received.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

/// How a region's health endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// 200 at once.
    Ok,
    /// 503 at once.
    Fail,
    /// 200 after 11 s: slower than the seed's 10 s limit.
    Slow,
    /// The connection is closed without an answer.
    Down,
}

impl Health {
    pub fn parse(s: &str) -> Option<Health> {
        Some(match s {
            "ok" => Health::Ok,
            "fail" => Health::Fail,
            "slow" => Health::Slow,
            "down" => Health::Down,
            _ => return None,
        })
    }
}

struct State {
    health: BTreeMap<String, Health>,
    messages: Vec<Value>,
}

pub struct Web {
    /// (region, port) of each health endpoint.
    pub health_ports: Vec<(String, u16)>,
    pub sink_port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(String, String, Vec<u8>)> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut length = 0;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((method, path, body))
}

fn reply(stream: &mut TcpStream, code: u16, body: &str) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
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
            messages: Vec::new(),
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
                while let Some((_, _, _)) = read_request(&mut reader) {
                    let mode = st
                        .lock()
                        .unwrap()
                        .health
                        .get(&region_name)
                        .copied()
                        .unwrap_or(Health::Ok);
                    let result = match mode {
                        Health::Ok => reply(
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
            while let Some((method, path, body)) = read_request(&mut reader) {
                let result = if let Some(rest) = path.strip_prefix("/control/health/") {
                    let mut parts = rest.split('/');
                    match (parts.next(), parts.next().and_then(Health::parse)) {
                        (Some(region), Some(mode))
                            if st.lock().unwrap().health.contains_key(region) =>
                        {
                            st.lock().unwrap().health.insert(region.to_string(), mode);
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

    pub fn sink_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.sink_port)
    }

    pub fn set_health(&self, region: &str, mode: Health) {
        self.state
            .lock()
            .unwrap()
            .health
            .insert(region.to_string(), mode);
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
