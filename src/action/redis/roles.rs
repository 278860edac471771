//! A server's place in replication: info, role.

use super::*;
use crate::action::world::{RedisState, World};

input! {
    redis:
    pub struct InfoInput {
        /// One section ("replication", "server", "memory", ...); default: all.
        pub section: Option<String>,
    }
}

/// INFO, parsed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Info {
    /// Section name (lower case) → field → value.
    pub sections: BTreeMap<String, BTreeMap<String, String>>,
}

action! {
    /// INFO, parsed into sections of fields.
    InfoAction(InfoInput) -> Info = Spec::read("redis", "info").primary("url").timeout(10)
}

impl Action for InfoAction {
    fn describe(input: &InfoInput) -> String {
        format!(
            "INFO {}on {}",
            input
                .section
                .as_deref()
                .map(|s| format!("{s} "))
                .unwrap_or_default(),
            target(&input.url, &input.name)
        )
    }

    fn predict(_: &InfoInput) -> Info {
        Info {
            sections: BTreeMap::new(),
        }
    }

    async fn run(input: InfoInput, cx: Cx) -> Result<Info, ActionError> {
        let (mut conn, target) = connect(&input.url, &input.name, &cx).await?;
        let mut args = vec!["INFO"];
        if let Some(s) = &input.section {
            args.push(s);
        }
        let reply = text(&query(&mut conn, &target, &args).await?);
        Ok(Info {
            sections: parse_info(&reply),
        })
    }
}

/// A server's place in replication.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Role {
    /// "master" (a primary) or "slave" (a replica).
    pub role: String,
    /// The replication offset.
    pub offset: i64,
    /// A replica's primary, host:port.
    pub primary: Option<String>,
    /// A replica's link to its primary: "up" or "down".
    pub link: Option<String>,
    /// A primary's replicas as host:port.
    pub replicas: Vec<String>,
    /// A primary's coordinated failover state ("no-failover" when none runs).
    pub failover_state: Option<String>,
}

pub(crate) async fn role_of(
    conn: &mut MultiplexedConnection,
    target: &str,
) -> Result<Role, ActionError> {
    let info = replication_info(conn, target).await?;
    let role = info.get("role").cloned().unwrap_or_default();
    let is_primary = role == "master";
    let replicas = (0..num(&info, "connected_slaves"))
        .filter_map(|i| info.get(&format!("slave{i}")))
        .filter_map(|v| {
            let kv: BTreeMap<&str, &str> = v.split(',').filter_map(|p| p.split_once('=')).collect();
            Some(format!("{}:{}", kv.get("ip")?, kv.get("port")?))
        })
        .collect();
    Ok(Role {
        offset: if is_primary {
            num(&info, "master_repl_offset")
        } else {
            num(&info, "slave_repl_offset")
        },
        primary: (!is_primary).then(|| {
            format!(
                "{}:{}",
                info.get("master_host").cloned().unwrap_or_default(),
                num(&info, "master_port")
            )
        }),
        link: (!is_primary).then(|| info.get("master_link_status").cloned().unwrap_or_default()),
        failover_state: info.get("master_failover_state").cloned(),
        replicas,
        role,
    })
}

pub(super) fn role_summary(r: &Role) -> String {
    if r.role == "master" {
        format!(
            "now primary at offset {} with {} replica(s)",
            r.offset,
            r.replicas.len()
        )
    } else {
        format!(
            "now replica of {} at offset {}, link {}",
            r.primary.as_deref().unwrap_or("?"),
            r.offset,
            r.link.as_deref().unwrap_or("?")
        )
    }
}

pub(super) async fn preview_role(
    url: &SecretString,
    name: &Option<String>,
    cx: &Cx,
) -> Option<String> {
    let (mut conn, target) = connect(url, name, cx).await.ok()?;
    role_of(&mut conn, &target)
        .await
        .ok()
        .map(|r| role_summary(&r))
}

action! {
    /// Primary or replica, the replication offset, the primary and link of a replica, the replicas
    /// of a primary.
    RoleAction(Target) -> Role = Spec::read("redis", "role").primary("url").timeout(10)
}

impl Action for RoleAction {
    fn describe(input: &Target) -> String {
        format!("role of {}", target(&input.url, &input.name))
    }

    fn predict(_: &Target) -> Role {
        Role {
            role: "master".into(),
            offset: 0,
            primary: None,
            link: None,
            replicas: vec![],
            failover_state: None,
        }
    }

    fn predict_in(input: &Target, world: &World) -> Option<Result<Role, ActionError>> {
        let place = world.redis(&input.url)?;
        let master = world.redis_master();
        Some(Ok(match place.redis {
            Some(RedisState::Primary) => Role {
                role: "master".into(),
                offset: 0,
                primary: None,
                link: None,
                replicas: vec![],
                failover_state: Some("no-failover".into()),
            },
            _ => Role {
                role: "slave".into(),
                offset: 0,
                primary: master.and_then(|m| {
                    Some(format!(
                        "{}:{}",
                        m.redis_host.clone()?,
                        m.redis_port.unwrap_or(6379)
                    ))
                }),
                link: Some(
                    if master.is_some_and(|m| m.redis == Some(RedisState::Primary)) {
                        "up"
                    } else {
                        "down"
                    }
                    .into(),
                ),
                replicas: vec![],
                failover_state: None,
            },
        }))
    }

    async fn run(input: Target, cx: Cx) -> Result<Role, ActionError> {
        let (mut conn, target) = connect(&input.url, &input.name, &cx).await?;
        role_of(&mut conn, &target).await
    }
}
