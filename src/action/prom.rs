//! `prom::` — Prometheus as the source of error rates, latencies and success criteria: an
//! instant query, and a gate that holds an expression against a threshold for consecutive
//! evaluations.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Action, ActionError, Cx, Dur, Poll, Spec};
use crate::secret::SecretString;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryInput {
    /// The Prometheus server, e.g. http://prometheus:9090 (may be a secret).
    pub url: SecretString,
    /// A PromQL expression, e.g. sum(rate(http_requests_total{code=~"5.."}[1m])).
    pub query: String,
}

/// One sample of an instant vector (or the scalar).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Sample {
    /// Its labels (empty for a scalar or an aggregate without `by`).
    pub labels: serde_json::Map<String, Value>,
    /// Its value (NaN and ±Inf are kept as Prometheus writes them: null here).
    pub value: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct QueryResult {
    /// vector, scalar, matrix or string.
    pub result_type: String,
    pub samples: Vec<Sample>,
}

fn base(url: &SecretString) -> Result<String, ActionError> {
    Ok(url
        .reveal()
        .map_err(ActionError::permanent)?
        .trim_end_matches('/')
        .to_string())
}

/// Runs an instant query; the server's own error (a bad expression) is permanent.
async fn instant(url: &SecretString, query: &str, cx: &Cx) -> Result<QueryResult, ActionError> {
    let shown = url.shown();
    let endpoint = format!("{}/api/v1/query", base(url)?);
    let response = cx
        .http
        .get(&endpoint)
        .query(&[("query", query)])
        .timeout(cx.timeout.min(Duration::from_secs(30)))
        .send()
        .await
        .map_err(|e| ActionError {
            message: format!("Prometheus {shown}: {}", super::http::error_text(&e)),
            kind: super::http::classify(&e),
        })?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| {
        ActionError::maybe_applied(format!(
            "Prometheus {shown}: the answer (HTTP {status}) is not the API's JSON: {}",
            super::http::error_text(&e)
        ))
    })?;
    if body["status"] != "success" {
        let message = format!(
            "Prometheus {shown}: query `{query}` failed: {} ({})",
            body["error"].as_str().unwrap_or("no reason given"),
            body["errorType"].as_str().unwrap_or("error")
        );
        return Err(if status.is_server_error() {
            ActionError::maybe_applied(message)
        } else {
            ActionError::permanent(message)
        });
    }
    let data = &body["data"];
    let result_type = data["resultType"].as_str().unwrap_or("").to_string();
    let number = |v: &Value| {
        v.as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|f| f.is_finite())
    };
    let samples = match result_type.as_str() {
        "vector" => data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| Sample {
                labels: s["metric"].as_object().cloned().unwrap_or_default(),
                value: number(&s["value"][1]),
            })
            .collect(),
        "scalar" => vec![Sample {
            labels: Default::default(),
            value: number(&data["result"][1]),
        }],
        _ => Vec::new(),
    };
    Ok(QueryResult {
        result_type,
        samples,
    })
}

action! {
    /// An instant PromQL query against the Prometheus HTTP API: each sample's labels and value.
    Query(QueryInput) -> QueryResult = Spec::read("prom", "query").timeout(30)
}

impl Action for Query {
    fn describe(input: &QueryInput) -> String {
        format!("query {} on Prometheus {}", input.query, input.url.shown())
    }

    fn predict(_: &QueryInput) -> QueryResult {
        QueryResult {
            result_type: "vector".into(),
            samples: vec![],
        }
    }

    async fn run(input: QueryInput, cx: Cx) -> Result<QueryResult, ActionError> {
        instant(&input.url, &input.query, &cx).await
    }
}

/// How a value compares with the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum Op {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
}

impl Op {
    fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
        }
    }

    fn text(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckInput {
    /// The Prometheus server (may be a secret).
    pub url: SecretString,
    /// A PromQL expression; every sample it returns must pass.
    pub query: String,
    /// How each value compares with the threshold: "<", "<=", ">" or ">=".
    pub op: Op,
    /// The value to compare with, e.g. 0.01 for an error rate, 150 for a P99 in ms.
    pub threshold: f64,
    /// Passing evaluations in a row that make the gate pass (default 3).
    pub consecutive: Option<u32>,
    /// Between evaluations (default "15s", Prometheus' usual scrape interval).
    pub interval: Option<Dur>,
    /// A query that returns nothing passes (default false: no data fails, as a silent
    /// region is no evidence of health).
    pub empty_ok: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CheckResult {
    /// The values of the last evaluation.
    pub values: Vec<Sample>,
    /// Evaluations made.
    pub evaluations: u32,
}

/// Whether every sample passes, and the values as text for messages.
fn judge(samples: &[Sample], op: Op, threshold: f64, empty_ok: bool) -> (bool, String) {
    if samples.is_empty() {
        return (empty_ok, "no samples".into());
    }
    let mut pass = true;
    let mut parts = Vec::new();
    for s in samples {
        let ok = s.value.is_some_and(|v| op.holds(v, threshold));
        pass &= ok;
        let labels: Vec<String> = s
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect();
        let value = s.value.map(|v| format!("{v}")).unwrap_or("NaN".into());
        parts.push(if labels.is_empty() {
            value
        } else {
            format!("{{{}}} {value}", labels.join(","))
        });
    }
    (pass, parts.join(", "))
}

action! {
    /// A gate: evaluate a PromQL expression until every sample holds against the threshold for
    /// `consecutive` evaluations in a row; fails at the time limit showing the values.
    Check(CheckInput) -> CheckResult = Spec::read("prom", "check").timeout(300).retries(0)
}

impl Action for Check {
    fn describe(input: &CheckInput) -> String {
        format!(
            "check {} {} {} on Prometheus {} ({} in a row)",
            input.query,
            input.op.text(),
            input.threshold,
            input.url.shown(),
            input.consecutive.unwrap_or(3)
        )
    }

    fn predict(_: &CheckInput) -> CheckResult {
        CheckResult {
            values: vec![],
            evaluations: 0,
        }
    }

    async fn run(input: CheckInput, cx: Cx) -> Result<CheckResult, ActionError> {
        let want = input.consecutive.unwrap_or(3).max(1);
        let interval = input
            .interval
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(15));
        let poll = Poll::new(&cx, interval);
        let (mut streak, mut evaluations) = (0u32, 0u32);
        let mut seen = Vec::new();
        loop {
            let result = instant(&input.url, &input.query, &cx).await?;
            evaluations += 1;
            let (pass, text) = judge(
                &result.samples,
                input.op,
                input.threshold,
                input.empty_ok.unwrap_or(false),
            );
            streak = if pass { streak + 1 } else { 0 };
            seen.push(format!("{}{text}", if pass { "" } else { "✗ " }));
            cx.note(format!("check {evaluations}: {text} ({streak}/{want})"));
            if streak >= want {
                return Ok(CheckResult {
                    values: result.samples,
                    evaluations,
                });
            }
            poll.pause(&cx, |limit| {
                let last: Vec<&str> = seen.iter().rev().take(5).map(String::as_str).collect();
                format!(
                    "`{}` {} {} did not hold {want} times in a row within {limit}; last values (newest first): {}",
                    input.query,
                    input.op.text(),
                    input.threshold,
                    last.join(" | ")
                )
            })
            .await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: Option<f64>) -> Sample {
        Sample {
            labels: Default::default(),
            value: v,
        }
    }

    #[test]
    fn a_gate_passes_only_when_every_sample_holds() {
        // (samples, op, threshold, empty_ok) → pass
        let cases: &[(Vec<Sample>, Op, f64, bool, bool)] = &[
            (vec![s(Some(0.001))], Op::Lt, 0.01, false, true),
            (vec![s(Some(0.01))], Op::Lt, 0.01, false, false),
            (vec![s(Some(0.01))], Op::Le, 0.01, false, true),
            (
                vec![s(Some(0.001)), s(Some(0.2))],
                Op::Lt,
                0.01,
                false,
                false,
            ),
            (vec![s(None)], Op::Lt, 0.01, false, false),
            (vec![], Op::Lt, 0.01, false, false),
            (vec![], Op::Lt, 0.01, true, true),
            (vec![s(Some(150.0))], Op::Ge, 100.0, false, true),
            (vec![s(Some(99.0))], Op::Gt, 100.0, false, false),
        ];
        for (samples, op, threshold, empty_ok, want) in cases {
            let (got, text) = judge(samples, *op, *threshold, *empty_ok);
            assert_eq!(got, *want, "{op:?} {threshold} on {text}");
        }
    }
}
