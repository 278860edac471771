//! Making a server a primary or a replica: promote, replicate.

use super::*;

/// Whether the call changed the server.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Changed {
    /// False when the server already was as asked.
    pub changed: bool,
    /// Its role afterwards.
    pub role: String,
}

/// Sends `command` unless the server's role already is as `done` wants it; its role after.
async fn converge_role(
    url: &SecretString,
    name: &Option<String>,
    cx: &Cx,
    done: impl Fn(&Role) -> bool,
    command: &[&str],
) -> Result<Changed, ActionError> {
    let (mut conn, target) = connect(url, name, cx).await?;
    let before = role_of(&mut conn, &target).await?;
    if done(&before) {
        return Ok(Changed {
            changed: false,
            role: before.role,
        });
    }
    query(&mut conn, &target, command).await?;
    let after = role_of(&mut conn, &target).await?;
    Ok(Changed {
        changed: true,
        role: after.role,
    })
}

action! {
    /// Make a replica a primary (REPLICAOF NO ONE); a no-op on a primary.
    Promote(Target) -> Changed = Spec::converge("redis", "promote").primary("url").timeout(10)
}

impl Action for Promote {
    fn describe(input: &Target) -> String {
        format!("promote {} to primary", target(&input.url, &input.name))
    }

    fn predict(_: &Target) -> Changed {
        Changed {
            changed: true,
            role: "master".into(),
        }
    }

    async fn preview(input: Target, cx: Cx) -> Option<String> {
        preview_role(&input.url, &input.name, &cx).await
    }

    async fn run(input: Target, cx: Cx) -> Result<Changed, ActionError> {
        let is_primary = |r: &Role| r.role == "master";
        let command = ["REPLICAOF", "NO", "ONE"];
        converge_role(&input.url, &input.name, &cx, is_primary, &command).await
    }
}

input! {
    redis:
    pub struct ReplicateInput {
        /// The new primary's host.
        pub primary_host: String,
        /// The new primary's port.
        pub primary_port: u16,
    }
}

action! {
    /// Make a server a replica of a primary (REPLICAOF host port); a no-op when it already is.
    Replicate(ReplicateInput) -> Changed = Spec::converge("redis", "replicate").timeout(10)
}

impl Action for Replicate {
    fn describe(input: &ReplicateInput) -> String {
        format!(
            "make {} a replica of {}:{}",
            target(&input.url, &input.name),
            input.primary_host,
            input.primary_port
        )
    }

    fn predict(_: &ReplicateInput) -> Changed {
        Changed {
            changed: true,
            role: "slave".into(),
        }
    }

    async fn preview(input: ReplicateInput, cx: Cx) -> Option<String> {
        preview_role(&input.url, &input.name, &cx).await
    }

    async fn run(input: ReplicateInput, cx: Cx) -> Result<Changed, ActionError> {
        let wanted = format!("{}:{}", input.primary_host, input.primary_port);
        let follows = |r: &Role| r.role == "slave" && r.primary.as_deref() == Some(&wanted);
        let port = input.primary_port.to_string();
        let command = ["REPLICAOF", &input.primary_host, &port];
        converge_role(&input.url, &input.name, &cx, follows, &command).await
    }
}
