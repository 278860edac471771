//! Waiting until a replica has everything its primary has.

use super::*;

input! {
    redis:
    pub struct WaitSyncedInput {
        /// Its primary: synced means the replica's offset equals the primary's.
        pub primary_url: Option<SecretString>,
        /// Time between checks (default "100ms").
        #[serde(default = "Dur::ms::<100>")]
        pub interval: Dur,
    }
}

/// A synced replica.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Synced {
    /// The replica's offset.
    pub offset: i64,
    /// The primary's offset (when primary_url was given).
    pub primary_offset: Option<i64>,
    /// Milliseconds waited.
    pub waited_ms: u64,
}

action! {
    /// Wait until a replica's link is up, its sync is done and (with primary_url) its offset equals
    /// the primary's.
    WaitSynced(WaitSyncedInput) -> Synced =
        Spec::read("redis", "wait_synced").timeout(120).retries(0)
}

impl Action for WaitSynced {
    fn describe(input: &WaitSyncedInput) -> String {
        format!("wait until {} is synced", target(&input.url, &input.name))
    }

    fn predict(_: &WaitSyncedInput) -> Synced {
        Synced {
            offset: 0,
            primary_offset: Some(0),
            waited_ms: 0,
        }
    }

    async fn run(input: WaitSyncedInput, cx: Cx) -> Result<Synced, ActionError> {
        let poll = Poll::new(&cx, input.interval.0);
        let (mut conn, target) = connect(&input.url, &input.name, &cx).await?;
        let mut primary = match &input.primary_url {
            Some(p) => Some(connect(p, &None, &cx).await?),
            None => None,
        };
        loop {
            let info = replication_info(&mut conn, &target).await?;
            if info.get("role").map(String::as_str) != Some("slave") {
                return Err(ActionError::permanent(format!("{target} is not a replica")));
            }
            let up = info.get("master_link_status").map(String::as_str) == Some("up");
            let synced = num(&info, "master_sync_in_progress") == 0;
            let offset = num(&info, "slave_repl_offset");
            let primary_offset = match &mut primary {
                Some((pconn, ptarget)) => Some(num(
                    &replication_info(pconn, ptarget).await?,
                    "master_repl_offset",
                )),
                None => None,
            };
            if up && synced && primary_offset.is_none_or(|p| p == offset) {
                return Ok(Synced {
                    offset,
                    primary_offset,
                    waited_ms: poll.waited_ms(),
                });
            }
            let state = format!(
                "link {}, offset {offset}{}",
                if up { "up" } else { "down" },
                primary_offset
                    .map(|p| format!(" of {p}"))
                    .unwrap_or_default()
            );
            cx.note(state.clone());
            poll.pause(&cx, |limit| {
                format!("{target} did not sync within {limit}: {state}")
            })
            .await?;
        }
    }
}
