//! Waiting for a change to reach every Route53 server, and the health checks.

use super::*;

input! {
    route53:
    pub struct WaitChangeInput {
        /// The change id an upsert, delete or set_weights returned (null: nothing to wait for).
        pub change_id: Option<String>,
        /// Time between checks (default "2s").
        #[serde(default = "Dur::ms::<2000>")]
        pub interval: Dur,
    }
}

/// A change that has reached every Route53 name server.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct InSync {
    /// "INSYNC" (or "UNCHANGED" when there was nothing to wait for).
    pub status: String,
    /// Milliseconds waited.
    pub waited_ms: u64,
}

action! {
    /// Wait until a Route53 change is INSYNC (propagated to every Route53 name server).
    WaitChange(WaitChangeInput) -> InSync =
        Spec::read("dns", "wait_change").primary("change_id").timeout(300).retries(0)
}

impl Action for WaitChange {
    fn describe(input: &WaitChangeInput) -> String {
        format!(
            "wait for change {} to be in sync",
            input.change_id.as_deref().unwrap_or("(none)")
        )
    }

    fn predict(_: &WaitChangeInput) -> InSync {
        InSync {
            status: "INSYNC".into(),
            waited_ms: 0,
        }
    }

    async fn run(input: WaitChangeInput, cx: Cx) -> Result<InSync, ActionError> {
        let poll = Poll::new(&cx, input.interval.0);
        let Some(id) = input.change_id.clone().filter(|id| id != PREDICTED) else {
            return Ok(InSync {
                status: "UNCHANGED".into(),
                waited_ms: 0,
            });
        };
        let endpoint = Endpoint {
            endpoint_url: input.endpoint_url.clone(),
            region: input.region.clone(),
        };
        let c = client(&endpoint).await;
        loop {
            let out = c
                .get_change()
                .id(&id)
                .send()
                .await
                .map_err(|e| aws_error(&format!("change {id}"), &endpoint, e))?;
            let status = out
                .change_info()
                .map(|i| i.status().clone())
                .unwrap_or(ChangeStatus::Pending);
            if status == ChangeStatus::Insync {
                return Ok(InSync {
                    status: "INSYNC".into(),
                    waited_ms: poll.waited_ms(),
                });
            }
            cx.note(format!("change {id}: {}", status.as_str()));
            poll.pause(&cx, |limit| {
                format!("change {id} was still {} after {limit}", status.as_str())
            })
            .await?;
        }
    }
}

/// One Route53 health check.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HealthCheck {
    /// Its id (what a record's health_check_id names).
    pub id: String,
    /// HTTP, HTTPS, TCP, ...
    #[serde(rename = "type")]
    pub htype: String,
    /// The checked name.
    pub fqdn: Option<String>,
    /// The checked address.
    pub ip_address: Option<String>,
    /// The checked port.
    pub port: Option<i32>,
    /// The checked path.
    pub path: Option<String>,
}

/// The account's health checks.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HealthChecks {
    /// Every health check (all pages).
    pub health_checks: Vec<HealthCheck>,
}

action! {
    /// List the Route53 health checks (all pages): id, type, target, port, path.
    HealthChecksAction(Endpoint) -> HealthChecks = Spec::read("dns", "health_checks")
}

impl Action for HealthChecksAction {
    fn describe(input: &Endpoint) -> String {
        format!("health checks in {}", where_(input))
    }

    fn predict(_: &Endpoint) -> HealthChecks {
        HealthChecks {
            health_checks: vec![],
        }
    }

    async fn run(input: Endpoint, _cx: Cx) -> Result<HealthChecks, ActionError> {
        let c = client(&input).await;
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = c
                .list_health_checks()
                .set_marker(marker.clone())
                .send()
                .await
                .map_err(|e| aws_error("listing health checks", &input, e))?;
            for h in page.health_checks() {
                let cfg = h.health_check_config();
                out.push(HealthCheck {
                    id: h.id().to_string(),
                    htype: cfg
                        .map(|c| c.r#type().as_str().to_string())
                        .unwrap_or_default(),
                    fqdn: cfg
                        .and_then(|c| c.fully_qualified_domain_name())
                        .map(str::to_string),
                    ip_address: cfg.and_then(|c| c.ip_address()).map(str::to_string),
                    port: cfg.and_then(|c| c.port()),
                    path: cfg.and_then(|c| c.resource_path()).map(str::to_string),
                });
            }
            if !page.is_truncated() {
                return Ok(HealthChecks { health_checks: out });
            }
            marker = page.next_marker().map(str::to_string);
        }
    }
}
