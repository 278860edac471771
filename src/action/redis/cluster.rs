//! Redis Cluster: cluster info and nodes.

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

pub struct ClusterInfoAction;

impl Action for ClusterInfoAction {
    type Input = Target;
    type Output = ClusterInfo;

    fn spec() -> Spec {
        Spec::read(
            "redis",
            "cluster_info",
            "CLUSTER INFO of a Redis Cluster node: state, slots assigned, known nodes.",
        )
        .primary("url")
        .timeout(10)
    }

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

pub struct ClusterNodesAction;

impl Action for ClusterNodesAction {
    type Input = Target;
    type Output = ClusterNodes;

    fn spec() -> Spec {
        Spec::read(
            "redis",
            "cluster_nodes",
            "CLUSTER NODES of a Redis Cluster node, parsed: ids, addresses, roles, links, slots.",
        )
        .primary("url")
        .timeout(10)
    }

    fn describe(input: &Target) -> String {
        format!("CLUSTER NODES on {}", target(&input.url, &input.name))
    }

    fn predict(_: &Target) -> ClusterNodes {
        ClusterNodes { nodes: vec![] }
    }

    async fn run(input: Target, cx: Cx) -> Result<ClusterNodes, ActionError> {
        let (mut conn, target) = connect(&input.url, &input.name, &cx).await?;
        let reply = text(&query(&mut conn, &target, &["CLUSTER", "NODES"]).await?);
        let nodes = reply
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
            .collect();
        Ok(ClusterNodes { nodes })
    }
}
