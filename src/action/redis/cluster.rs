//! Redis Cluster: cluster info and nodes; growing it — a node met, slots moved one at a time
//! with their keys, each move converging so that a rebalance cut off anywhere
//! resumes and finishes.

use super::*;

/// CLUSTER INFO, parsed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ClusterInfo {
    /// "ok" or "fail".
    pub state: String,
    /// Slots assigned to nodes (16384 when complete).
    pub slots_assigned: i64,
    /// Nodes that know each other.
    pub known_nodes: i64,
    /// Every field as Redis gives it.
    pub fields: BTreeMap<String, String>,
}

action! {
    /// CLUSTER INFO of a Redis Cluster node: state, slots assigned, known nodes.
    ClusterInfoAction(Target) -> ClusterInfo =
        Spec::read("redis", "cluster_info").primary("url").timeout(10)
}

impl Action for ClusterInfoAction {
    fn describe(input: &Target) -> String {
        format!("CLUSTER INFO on {}", target(&input.url, &input.name))
    }

    fn predict(_: &Target) -> ClusterInfo {
        ClusterInfo {
            state: "ok".into(),
            slots_assigned: 16384,
            known_nodes: 1,
            fields: BTreeMap::new(),
        }
    }

    async fn run(input: Target, cx: Cx) -> Result<ClusterInfo, ActionError> {
        let (mut conn, target) = connect(&input.url, &input.name, &cx).await?;
        let reply = text(&query(&mut conn, &target, &["CLUSTER", "INFO"]).await?);
        let fields = parse_info(&reply).remove("default").unwrap_or_default();
        Ok(ClusterInfo {
            state: fields.get("cluster_state").cloned().unwrap_or_default(),
            slots_assigned: num(&fields, "cluster_slots_assigned"),
            known_nodes: num(&fields, "cluster_known_nodes"),
            fields,
        })
    }
}

/// One line of CLUSTER NODES.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ClusterNode {
    /// The node id.
    pub id: String,
    /// host:port (without the bus port).
    pub address: String,
    /// Flags: myself, master, slave, fail, ...
    pub flags: Vec<String>,
    /// A replica's primary id.
    pub primary_id: Option<String>,
    /// "connected" or "disconnected".
    pub link_state: String,
    /// Slot ranges served, e.g. "0-5460".
    pub slots: Vec<String>,
}

/// CLUSTER NODES, parsed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ClusterNodes {
    /// Every node the asked node knows.
    pub nodes: Vec<ClusterNode>,
}

action! {
    /// CLUSTER NODES of a Redis Cluster node, parsed: ids, addresses, roles, links, slots.
    ClusterNodesAction(Target) -> ClusterNodes =
        Spec::read("redis", "cluster_nodes").primary("url").timeout(10)
}

impl Action for ClusterNodesAction {
    fn describe(input: &Target) -> String {
        format!("CLUSTER NODES on {}", target(&input.url, &input.name))
    }

    fn predict(_: &Target) -> ClusterNodes {
        ClusterNodes { nodes: vec![] }
    }

    async fn run(input: Target, cx: Cx) -> Result<ClusterNodes, ActionError> {
        let (mut conn, target) = connect(&input.url, &input.name, &cx).await?;
        let nodes = nodes_of(&mut conn, &target).await?;
        Ok(ClusterNodes { nodes })
    }
}

/// CLUSTER NODES as the node asked sees it.
async fn nodes_of(
    conn: &mut MultiplexedConnection,
    target: &str,
) -> Result<Vec<ClusterNode>, ActionError> {
    let reply = text(&query(conn, target, &["CLUSTER", "NODES"]).await?);
    Ok(reply
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            Some(ClusterNode {
                id: f[0].into(),
                address: f[1].split('@').next().unwrap_or("").into(),
                flags: f[2].split(',').map(str::to_string).collect(),
                primary_id: (f[3] != "-").then(|| f[3].to_string()),
                link_state: f[7].into(),
                slots: f[8..].iter().map(|s| s.to_string()).collect(),
            })
        })
        .collect())
}

/// Whether a node's slot list (ranges like "0-5460", single slots, and "[…]" migration marks,
/// which do not count) covers `slot`.
fn serves(node: &ClusterNode, slot: u16) -> bool {
    node.slots.iter().filter(|s| !s.starts_with('[')).any(|s| {
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        match (a.parse::<u16>(), b.parse::<u16>()) {
            (Ok(a), Ok(b)) => a <= slot && slot <= b,
            _ => false,
        }
    })
}

input! {
    redis:
    pub struct MeetInput {
        /// The new node's host as the cluster reaches it.
        pub host: String,
        /// The new node's port.
        pub port: u16,
    }
}

/// A node joined (or found already in the cluster).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Met {
    /// False when the cluster already knew it.
    pub changed: bool,
    /// The node's id, as the cluster knows it.
    pub node_id: String,
}

action! {
    /// Add a node to a Redis Cluster (CLUSTER MEET from `url`, a member) and wait until the cluster
    /// knows it, linked; a no-op when it already does.
    ClusterMeet(MeetInput) -> Met =
        Spec::converge("redis", "cluster_meet").primary("url").timeout(60)
}

impl Action for ClusterMeet {
    fn describe(input: &MeetInput) -> String {
        format!(
            "add {}:{} to the cluster of {}",
            input.host,
            input.port,
            target(&input.url, &input.name)
        )
    }

    fn predict(_: &MeetInput) -> Met {
        Met {
            changed: true,
            node_id: String::new(),
        }
    }

    async fn run(input: MeetInput, cx: Cx) -> Result<Met, ActionError> {
        let (mut conn, target) = connect(&input.url, &input.name, &cx).await?;
        let address = format!("{}:{}", input.host, input.port);
        let known = |nodes: &[ClusterNode]| {
            nodes
                .iter()
                .find(|n| n.address == address && !n.flags.iter().any(|f| f == "handshake"))
                .filter(|n| n.link_state == "connected")
                .map(|n| n.id.clone())
        };
        if let Some(id) = known(&nodes_of(&mut conn, &target).await?) {
            return Ok(Met {
                changed: false,
                node_id: id,
            });
        }
        query(
            &mut conn,
            &target,
            &["CLUSTER", "MEET", &input.host, &input.port.to_string()],
        )
        .await?;
        let deadline = Instant::now() + cx.timeout;
        loop {
            if let Some(id) = known(&nodes_of(&mut conn, &target).await?) {
                return Ok(Met {
                    changed: true,
                    node_id: id,
                });
            }
            if Instant::now() > deadline {
                return Err(ActionError::maybe_applied(format!(
                    "{target}: {address} is not a linked member of the cluster after {}",
                    humantime::format_duration(cx.timeout)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

input! {
    redis:
    pub struct MoveSlotInput {
        /// The node that will serve the slots (a secret URL; host and port are how `url`
        /// reaches it for MIGRATE).
        pub target_url: SecretString,
        /// The first slot to move (0-16383).
        pub slot: u16,
        /// How many consecutive slots, each moved by itself (default 1).
        pub count: Option<u16>,
    }
}

/// Slots moved.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MovedSlots {
    /// Slots that moved now (those the target already served are skipped).
    pub moved: u32,
    /// Keys migrated with them.
    pub keys: u64,
}

/// host, port and password of a Redis URL.
fn address_of(url: &SecretString) -> Result<(String, u16, Option<String>), ActionError> {
    let raw = url.reveal().map_err(ActionError::permanent)?;
    let info = redis::IntoConnectionInfo::into_connection_info(
        split_url(&raw)
            .map_err(ActionError::permanent)?
            .rest
            .as_str(),
    )
    .map_err(|e| ActionError::permanent(format!("{}: not a Redis URL: {e}", url.shown())))?;
    let (host, port) = match info.addr() {
        redis::ConnectionAddr::Tcp(h, p) => (h.clone(), *p),
        redis::ConnectionAddr::TcpTls { host, port, .. } => (host.clone(), *port),
        _ => {
            return Err(ActionError::permanent(format!(
                "{}: the target must be reached over TCP",
                url.shown()
            )))
        }
    };
    Ok((
        host,
        port,
        info.redis_settings().password().map(str::to_string),
    ))
}

action! {
    /// Move hash slots of a Redis Cluster from the node at `url` to `target_url`, one slot at a
    /// time with its keys (SETSLOT IMPORTING/MIGRATING, MIGRATE in batches, SETSLOT NODE): a move
    /// cut off half-way finishes when run again; slots the target already serves are skipped.
    MoveSlot(MoveSlotInput) -> MovedSlots =
        Spec::converge("redis", "move_slot").primary("url").timeout(600)
}

impl Action for MoveSlot {
    fn describe(input: &MoveSlotInput) -> String {
        let count = input.count.unwrap_or(1).max(1);
        let slots = if count == 1 {
            format!("slot {}", input.slot)
        } else {
            format!(
                "slots {}-{}",
                input.slot,
                input.slot as u32 + count as u32 - 1
            )
        };
        format!(
            "move {slots} from {} to {}",
            target(&input.url, &input.name),
            target(&input.target_url, &None)
        )
    }

    fn predict(input: &MoveSlotInput) -> MovedSlots {
        MovedSlots {
            moved: input.count.unwrap_or(1).max(1) as u32,
            keys: 0,
        }
    }

    async fn run(input: MoveSlotInput, cx: Cx) -> Result<MovedSlots, ActionError> {
        let (mut src, src_name) = connect(&input.url, &input.name, &cx).await?;
        let (mut dst, dst_name) = connect(&input.target_url, &None, &cx).await?;
        let (host, port, password) = address_of(&input.target_url)?;
        let src_id = text(&query(&mut src, &src_name, &["CLUSTER", "MYID"]).await?);
        let dst_id = text(&query(&mut dst, &dst_name, &["CLUSTER", "MYID"]).await?);
        // A node that has just joined refuses keys (CLUSTERDOWN) until it knows every slot's
        // owner: wait for it to say the cluster is ok.
        let deadline = Instant::now() + cx.timeout.min(Duration::from_secs(60));
        loop {
            let info = text(&query(&mut dst, &dst_name, &["CLUSTER", "INFO"]).await?);
            if info.contains("cluster_state:ok") {
                break;
            }
            if Instant::now() > deadline {
                return Err(ActionError::not_sent(format!(
                    "{dst_name}: its cluster state is not ok; it cannot take slots yet"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let count = input.count.unwrap_or(1).max(1) as u32;
        let (mut moved, mut keys) = (0u32, 0u64);
        for n in 0..count {
            let slot = input.slot as u32 + n;
            if slot > 16383 {
                return Err(ActionError::permanent(format!("slot {slot} is past 16383")));
            }
            let slot = slot as u16;
            let s = slot.to_string();
            let nodes = nodes_of(&mut src, &src_name).await?;
            let owner = nodes
                .iter()
                .find(|node| serves(node, slot))
                .map(|node| node.id.clone());
            if owner.as_deref() == Some(dst_id.as_str()) {
                continue;
            }
            if owner.as_deref() != Some(src_id.as_str()) {
                return Err(ActionError::permanent(format!(
                    "{src_name}: slot {slot} is served by {}, not by this node",
                    owner.unwrap_or_else(|| "no node".into())
                )));
            }
            query(
                &mut dst,
                &dst_name,
                &["CLUSTER", "SETSLOT", &s, "IMPORTING", &src_id],
            )
            .await?;
            query(
                &mut src,
                &src_name,
                &["CLUSTER", "SETSLOT", &s, "MIGRATING", &dst_id],
            )
            .await?;
            loop {
                let batch = query(
                    &mut src,
                    &src_name,
                    &["CLUSTER", "GETKEYSINSLOT", &s, "100"],
                )
                .await?;
                let names: Vec<String> = match &batch {
                    redis::Value::Array(items) => items.iter().map(text).collect(),
                    _ => Vec::new(),
                };
                if names.is_empty() {
                    break;
                }
                let port_text = port.to_string();
                let mut args: Vec<&str> =
                    vec!["MIGRATE", &host, &port_text, "", "0", "10000", "REPLACE"];
                if let Some(p) = &password {
                    args.extend(["AUTH", p.as_str()]);
                }
                args.push("KEYS");
                args.extend(names.iter().map(String::as_str));
                query(&mut src, &src_name, &args).await?;
                keys += names.len() as u64;
            }
            query(
                &mut dst,
                &dst_name,
                &["CLUSTER", "SETSLOT", &s, "NODE", &dst_id],
            )
            .await?;
            query(
                &mut src,
                &src_name,
                &["CLUSTER", "SETSLOT", &s, "NODE", &dst_id],
            )
            .await?;
            moved += 1;
        }
        Ok(MovedSlots { moved, keys })
    }
}
