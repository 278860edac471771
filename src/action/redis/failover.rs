//! A coordinated failover (FAILOVER TO) between a primary and its replica.

use super::*;

input! {
    redis:
    pub struct FailoverInput {
        /// The replica to promote, as host (default: Redis picks one).
        pub to_host: Option<String>,
        /// The replica's port (with to_host).
        pub to_port: Option<u16>,
        /// How long the primary waits for the replica to catch up before giving up (default "5s").
        #[serde(default = "Dur::ms::<5000>")]
        pub wait: Dur,
        /// Promote even if the replica did not catch up in time (FORCE; can lose writes).
        #[serde(default)]
        pub force: bool,
    }
}

impl FailoverInput {
    /// The replica asked for, host:port (None: Redis picks one, or only half of it was given).
    fn to(&self) -> Option<String> {
        match (&self.to_host, self.to_port) {
            (Some(h), Some(p)) => Some(format!("{h}:{p}")),
            _ => None,
        }
    }
}

/// A finished coordinated failover.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct FailedOver {
    /// False when the primary was already a replica of the requested target.
    pub changed: bool,
    /// The new primary, host:port.
    pub new_primary: String,
    /// Milliseconds until the roles had swapped.
    pub took_ms: u64,
}

action! {
    /// Coordinated failover (FAILOVER, Redis 6.2+): the primary pauses writes, waits for the
    /// replica to catch up, and swaps roles with it.
    Failover(FailoverInput) -> FailedOver =
        Spec::converge("redis", "failover").timeout(30).retries(0)
}

impl Action for Failover {
    fn describe(input: &FailoverInput) -> String {
        let to = input.to().map(|to| format!(" to {to}")).unwrap_or_default();
        format!(
            "fail over {}{to}{}",
            target(&input.url, &input.name),
            if input.force { " (FORCE)" } else { "" }
        )
    }

    fn predict(input: &FailoverInput) -> FailedOver {
        FailedOver {
            changed: true,
            new_primary: input.to().unwrap_or_default(),
            took_ms: 0,
        }
    }

    async fn preview(input: FailoverInput, cx: Cx) -> Option<String> {
        preview_role(&input.url, &input.name, &cx).await
    }

    async fn run(input: FailoverInput, cx: Cx) -> Result<FailedOver, ActionError> {
        let started = Instant::now();
        let (mut conn, target) = connect(&input.url, &input.name, &cx).await?;
        let before = role_of(&mut conn, &target).await?;
        if input.to_host.is_some() != input.to_port.is_some() {
            return Err(ActionError::permanent(
                "give both `to_host` and `to_port`, or neither",
            ));
        }
        let wanted = input.to();
        if before.role != "master" {
            // Already failed over (a resumed run): fine if it follows the wanted primary.
            if wanted.is_none() || before.primary == wanted {
                return Ok(FailedOver {
                    changed: false,
                    new_primary: before.primary.unwrap_or_default(),
                    took_ms: 0,
                });
            }
            return Err(ActionError::permanent(format!(
                "{target} is a replica of {}, not a primary",
                before.primary.unwrap_or_default()
            )));
        }
        let wait_ms = input.wait.0.as_millis().to_string();
        let port;
        let mut args = vec!["FAILOVER"];
        if let (Some(h), Some(p)) = (&input.to_host, input.to_port) {
            port = p.to_string();
            args.extend(["TO", h.as_str(), port.as_str()]);
            if input.force {
                args.push("FORCE");
            }
        }
        args.extend(["TIMEOUT", wait_ms.as_str()]);
        query(&mut conn, &target, &args).await?;
        let deadline = started + cx.timeout;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = role_of(&mut conn, &target).await?;
            if now.role == "slave"
                && now.failover_state.as_deref().unwrap_or("no-failover") == "no-failover"
            {
                return Ok(FailedOver {
                    changed: true,
                    new_primary: now.primary.unwrap_or_default(),
                    took_ms: started.elapsed().as_millis() as u64,
                });
            }
            if now.role == "master"
                && now.failover_state.as_deref() == Some("no-failover")
                && started.elapsed() > input.wait.0
            {
                return Err(ActionError::permanent(format!(
                    "{target}: the failover was abandoned (the replica did not catch up within {}); {target} is still the primary",
                    input.wait
                )));
            }
            if Instant::now() > deadline {
                return Err(ActionError::maybe_applied(format!(
                    "{target}: the failover did not finish in time (state {})",
                    now.failover_state.unwrap_or_default()
                )));
            }
        }
    }
}
